"""Offline evaluation harness: WER (Whisper via faster-whisper), speaker similarity (resemblyzer), DNSMOS,
PESQ-WB / STOI for codec round trips, RTF. Entry point: `scripts/evaluate.py`; library: `run_evaluation`."""
