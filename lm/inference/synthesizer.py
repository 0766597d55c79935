"""`Synthesizer`: the one class users import to clone a voice.

    from lm.inference.synthesizer import Synthesizer
    synth = Synthesizer.from_pretrained("runs/demo/train/export")
    result = synth.synthesize("Hello there. How are you?", prompt_wav, 22050, seed=1)
    soundfile.write("out.wav", result.wav, result.sample_rate)

It loads an export directory (`lm.checkpoint` weights + config, the sentencepiece text tokenizer and the codec
named by the config's metadata), encodes the voice prompt (any channel count and sample rate: down-mixed
and resampled at the edge), splits long text at sentence boundaries, generates every piece with the same
prompt (AR over the static KV cache, then Q-1 NAR passes: `lm.inference.generate.generate`), decodes with the
codec and joins the pieces with a short pause. With `candidates` N > 1 every piece is drawn N times and one
reading near the prompt's pace that a phone recogniser hears closest to its text is kept
(lm/inference/rerank.py). Without a prompt transcript the prompt only sets the voice (speaker-prompt mode);
with one, the model continues the prompt (VALL-E continuation mode) and the prompt's audio is cut off the
output.

Shape letters: C channels, T samples, Q codebooks, F frames.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from codec.audio import pad_batch
from codec.base import Codec, load_codec
from codec.loudness import scale_to_level
from data_pipeline.text.tokenizer import TextTokenizer
from lm.checkpoint import load_model, read_config
from lm.inference.export_dir import _apply_adapter, _check_export_dir, _codec_spec, _tokenizer_path
from lm.inference.generate import TTSRequest, fill_codebooks, generate
from lm.inference.house_voices import HOUSE_VOICES_FILE, HouseVoice, HouseVoices
from lm.inference.phone_alignment import (
    prompt_frame_phones,
    prompt_seconds_per_phone,
    reading_pace,
    text_phone_frames,
    text_phone_ids,
)
from lm.inference.prompt_audio import mix_seeds, prompt_at_codec_rate
from lm.inference.rerank import keep_best_reading
from lm.inference.row_batches import by_piece, draws, join_pieces, plan_batches, readings_to_hear
from lm.inference.sampling import SamplingConfig
from lm.inference.sentences import split_sentences
from lm.inference.synthesis_types import (
    DecodeConfig,
    Reading,
    SynthesisError,
    SynthesisRequest,
    SynthesisResult,
    Voice,
    _as_request,
    _Row,
)
from lm.inference.word_judge import WordJudge, load_word_judge
from lm.model.model import TTSModel
from lm.model.sequence import inference_prompt

if TYPE_CHECKING:  # lm.inference.streaming builds on this module
    from lm.inference.streaming import AudioChunk, StreamConfig

log = logging.getLogger(__name__)

class Synthesizer:
    """Text + voice prompt -> speech, from an export directory. See the module docstring."""

    def __init__(self, model: TTSModel, tokenizer: TextTokenizer, codec: Codec,
                 device: torch.device | str = "cpu", decode: DecodeConfig | None = None,
                 compile_step: bool = False, house_voices: HouseVoices | None = None,
                 word_judge: WordJudge | None = None) -> None:
        cfg = model.config
        if codec.codebook_size != cfg.codebook_size or codec.num_codebooks < cfg.num_codebooks:
            raise SynthesisError(
                f"codec ({codec.num_codebooks} codebooks x {codec.codebook_size}) does not fit the model "
                f"({cfg.num_codebooks} codebooks x {cfg.codebook_size}): wrong codec reference in the "
                "export?")
        if tokenizer.vocab_size > cfg.text_vocab_size:
            raise SynthesisError(f"text tokenizer has {tokenizer.vocab_size} pieces but the model only "
                                 f"{cfg.text_vocab_size}: tokenizer and model come from different runs")
        self.model, self.tokenizer, self.codec = model, tokenizer, codec
        self.device = torch.device(device)
        self.defaults = decode or DecodeConfig()
        self.defaults.validate()
        self.compile_step = compile_step
        self.house_voices = house_voices
        # best of N's word judge (DecodeConfig.judge "phones+words"): loaded at first use; False once it
        # turned out not to be installed (warned once, then phones alone)
        self._word_judge: WordJudge | None | bool = word_judge
        if house_voices is not None:
            for v in house_voices.voices:
                if v.codes.shape[0] < cfg.num_codebooks or int(v.codes.max()) >= cfg.codebook_size:
                    raise SynthesisError(f"house voice {v.name!r}: codes {tuple(v.codes.shape)} do not fit "
                                         "the model: the bank comes from another model or codec")

    # ---- loading ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path, device: str | torch.device = "cpu",
                        adapter: str | Path | None = None, dtype: torch.dtype | None = None,
                        compile_step: bool = False, **decode: Any) -> Synthesizer:
        """Load an export directory: model.safetensors + config.json (+ metadata naming the codec and the
        text tokenizer). `adapter`: a LoRA adapter directory applied on top. `decode`: DecodeConfig
        defaults for every call."""
        directory = Path(checkpoint_dir).expanduser()
        _check_export_dir(directory)
        try:
            config, metadata = read_config(directory)
            tokenizer = TextTokenizer.load(_tokenizer_path(directory, metadata))
            spec = _codec_spec(directory, metadata)
            codec = load_codec(spec, device=device)
            model = load_model(directory, device=device, dtype=dtype)
            house = HouseVoices.load(directory)
        except SynthesisError:
            raise
        except (OSError, ValueError, RuntimeError) as e:  # bad JSON / weights / tokenizer, codec offline ...
            raise SynthesisError(f"cannot load the export {directory}: {e}") from e
        stored = dict(metadata.get("decode", {}))
        if adapter is not None:
            model = _apply_adapter(model, Path(adapter), directory)
            if _adapts_ar(Path(adapter)):  # the adapter taught the AR the voice: it reads the prompt
                stored["ar_voice"] = "prompt"
        defaults = DecodeConfig().updated({**stored, **decode})
        log.info("loaded %s: %.1fM parameters, %d codebooks, codec %s at %d Hz, text vocab %d", directory,
                 model.num_parameters() / 1e6, config.num_codebooks, spec,
                 codec.sample_rate, tokenizer.vocab_size)
        return cls(model, tokenizer, codec, device=device, decode=defaults, compile_step=compile_step,
                   house_voices=house)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def decode_config(self) -> dict:
        """The default decode options (what a call without keywords uses), as a plain dict."""
        return asdict(self.defaults)

    # ---- public API ---------------------------------------------------------------------------------------
    def synthesize(self, text: str, prompt_wav: np.ndarray | torch.Tensor, prompt_sample_rate: int,
                   prompt_text: str | None = None, seed: int | None = None, **decode: Any) -> SynthesisResult:
        """Speak `text` in the voice of `prompt_wav` ([C, T] or [T] at `prompt_sample_rate`).

        Sentence pieces are generated one after another (so the first audio is ready after the first piece).
        `seed` makes the output reproducible; None draws one (reported in the result).
        """
        request = SynthesisRequest(text, prompt_wav, prompt_sample_rate, prompt_text, seed, decode)
        return self._run([request], rows_per_batch=1)[0]

    def synthesize_batch(self, requests: Sequence[SynthesisRequest | Mapping[str, Any]]
                         ) -> list[SynthesisResult]:
        """Synthesize several requests together: all their sentence pieces go through batched AR decoding
        (rows stop independently), `batch_size` rows at a time. A request is a `SynthesisRequest` or a dict
        with the same keys plus any decode keyword (as `synthesize` takes). Per-row knobs (temperature, top_k,
        top_p, repetition_penalty) may differ between requests; the random stream of a batch is seeded from
        all of its requests' seeds, so a batch is reproducible, but a sampled row differs from a lone
        `synthesize` (greedy rows are identical)."""
        reqs = [_as_request(r) for r in requests]
        if not reqs:
            return []
        return self._run(reqs, rows_per_batch=None)

    def encode_voice(self, prompt_wav: np.ndarray | torch.Tensor, prompt_sample_rate: int,
                     prompt_text: str | None = None, **decode: Any) -> Voice:
        """Encode a voice prompt once (the codec, and the aligner for a phone-aligned model in continuation
        mode), for `stream(voice=...)` and the server's saved voices."""
        cfg = self.defaults.updated(decode)
        request = SynthesisRequest("", prompt_wav, prompt_sample_rate, prompt_text)
        codes = self._encode_prompts([request], [cfg])[0]
        if not _has_text(prompt_text):
            return Voice(codes)
        phones = self._prompt_phones(0, request, codes.shape[-1]) if self.phone_aligned else None
        return Voice(codes, prompt_text, phones)

    def stream(self, text: str, prompt_wav: np.ndarray | torch.Tensor | None = None,
               prompt_sample_rate: int | None = None, prompt_text: str | None = None,
               seed: int | None = None, voice: Voice | None = None, stream_config: StreamConfig | None = None,
               **decode: Any) -> Iterator[AudioChunk]:
        """Speak `text` as a stream of `lm.inference.streaming.AudioChunk`s: sentence by sentence, and within
        a sentence in chunks of frames as the AR makes them (see lm/inference/streaming.py for the chunking
        and how close the stream comes to `synthesize`'s waveform). The voice is `voice` or `prompt_wav` as
        for `synthesize`. `stream_config`: an `lm.inference.streaming.StreamConfig`. Stop iterating (or close
        the iterator) to cancel. A stream reads one candidate per piece (`candidates` does not apply: best of
        N needs finished readings)."""
        from lm.inference.streaming import stream_utterance

        if voice is None:
            if prompt_wav is None or prompt_sample_rate is None:
                raise SynthesisError("stream needs a voice: pass voice=..., or prompt_wav and "
                                     "prompt_sample_rate")
            voice = self.encode_voice(prompt_wav, prompt_sample_rate, prompt_text, **decode)
        return stream_utterance(self, text, voice, seed=seed, config=stream_config, decode=decode)

    def plan(self, text: str, voice: Voice, cfg: DecodeConfig, request: int = 0
             ) -> tuple[list[_Row], list[str]]:
        """`text` -> one AR row per sentence piece (in order) and the pieces' text."""
        if not isinstance(text, str) or not text.strip():
            raise SynthesisError(f"request {request}: the text to synthesize is empty")
        prompt_text_ids = self._encode_text(voice.prompt_text) if _has_text(voice.prompt_text) else None
        if cfg.speed != 1.0 and not self.phone_aligned:
            raise SynthesisError(f"request {request}: speed {cfg.speed}: this model is not phone-aligned and "
                                 "speaks at its own pace; only speed 1.0 works with it")
        pace = self._prompt_pace(voice) if cfg.phone_durations == "engine" else None
        house = self._house_voice(voice, cfg, request)
        target_pace = None  # the prompt speaker's, timed as a reading is (best of N keeps readings near it)
        if (draws(cfg) > 1 and cfg.pace_tolerance > 0 and voice.prompt_phones is not None
                and _has_text(voice.prompt_text)):
            target_pace = reading_pace(voice.prompt_phones, voice.prompt_text, self.codec.frame_rate)
        rows, pieces = [], []
        for piece in split_sentences(text, max_chars=cfg.max_chars):
            ids = self._encode_text(piece)
            phones = self._piece_phones(piece, cfg, pace) if self.phone_aligned and ids.numel() else None
            if ids.numel() == 0 or (self.phone_aligned and phones is None):
                log.warning("request %d: sentence piece %r has nothing to speak after normalisation; skipped",
                            request, piece)
                continue
            phone_ids, durations = phones if phones is not None else (None, None)
            rows.append(_Row(request, len(pieces), ids, voice.codes, prompt_text_ids, cfg, phone_ids,
                             voice.prompt_phones, durations, house, text=piece, target_pace=target_pace))
            pieces.append(piece)
        if not pieces:
            raise SynthesisError(f"request {request}: nothing to speak in {text!r} after text normalisation")
        return rows, pieces

    # ---- the engine ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _run(self, requests: list[SynthesisRequest], rows_per_batch: int | None) -> list[SynthesisResult]:
        start = time.perf_counter()
        configs = [self.defaults.updated(r.decode) for r in requests]
        seeds = [r.seed if r.seed is not None else int(torch.randint(0, 2**31 - 1, ())) for r in requests]
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seeds[0] if len(seeds) == 1 else mix_seeds(seeds))
        prompts = self._encode_prompts(requests, configs)
        rows, pieces = self._make_rows(requests, configs, prompts)
        houses = {r.request: r.house.name for r in rows if r.house is not None}

        # best of N: every piece is drawn as N rows (greedy decoding would draw the same reading N times)
        rows = [replace(r, candidate=k) for r in rows for k in range(draws(r.decode))]
        n = len(requests)
        audio: list[list[np.ndarray | None]] = [[None] * len(p) for p in pieces]
        frames: list[list[int]] = [[0] * len(p) for p in pieces]
        guard: list[list[bool]] = [[False] * len(p) for p in pieces]
        errors: list[list[float]] = [[math.nan] * len(p) for p in pieces]
        first_audio = [math.nan] * n
        for batch in plan_batches(rows, rows_per_batch):  # a piece's readings always share a batch
            for row, reading, error in self._read_batch(batch, generator):
                i, p = row.request, row.piece
                errors[i][p] = error
                audio[i][p], frames[i][p], guard[i][p] = reading.wav, reading.frames, reading.hit_length_guard
                if p == 0:
                    first_audio[i] = time.perf_counter() - start
        wavs = [join_pieces(a, c.pause_seconds, self.sample_rate)
                for a, c in zip(audio, configs, strict=True)]
        elapsed = time.perf_counter() - start
        total_seconds = sum(len(w) for w in wavs) / self.sample_rate
        rtf = elapsed / total_seconds if total_seconds > 0 else math.inf
        return [
            SynthesisResult(wav=wavs[i], sample_rate=self.sample_rate, rtf=rtf,
                            first_audio_seconds=first_audio[i], elapsed_seconds=elapsed, seed=seeds[i],
                            mode="continuation" if _has_text(requests[i].prompt_text) else "speaker-prompt",
                            pieces=pieces[i], piece_frames=frames[i], hit_length_guard=guard[i],
                            house_voice=houses.get(i), candidates=draws(configs[i]),
                            piece_phone_errors=errors[i] if draws(configs[i]) > 1 else [])
            for i in range(n)
        ]

    def read_best(self, rows: list[_Row], generator: torch.Generator) -> list[tuple[Reading, float]]:
        """Sentence pieces (one row each, from `plan`) -> per piece the reading best of N keeps and its phone
        error rate: each piece's `decode.candidates` readings drawn in one AR batch, as `synthesize` draws
        them (the server's engine reads whole-file requests this way)."""
        readings = [replace(r, candidate=k) for r in rows for k in range(draws(r.decode))]
        return [(reading, error) for _, reading, error in self._read_batch(readings, generator)]

    def _read_batch(self, batch: list[_Row], generator: torch.Generator
                    ) -> list[tuple[_Row, Reading, float]]:
        """One AR batch holding every reading of its pieces -> per piece (its first row, the reading kept,
        that reading's phone error rate; NaN for a lone reading), pieces in batch order."""
        drawn = self._generate(batch, generator)
        kept = []
        for piece in by_piece(batch):
            row = batch[piece[0]]
            keep, error = keep_best_reading([drawn[b] for b in piece], row, self.sample_rate,
                                            self._judge_of(row.decode))
            kept.append((row, drawn[piece[keep]], error))
        return kept

    def _judge_of(self, cfg: DecodeConfig) -> WordJudge | None:
        """The word judge `cfg` asks for, loaded once (None: phones alone)."""
        if cfg.judge != "phones+words" or draws(cfg) == 1:
            return None
        if self._word_judge is None:
            self._word_judge = load_word_judge() or False
        return self._word_judge or None

    def _encode_prompts(self, requests: list[SynthesisRequest], configs: list[DecodeConfig]
                        ) -> list[torch.Tensor]:
        """Every prompt -> codes [Q, Fp] (one batched codec call)."""
        mono = []
        for i, (req, cfg) in enumerate(zip(requests, configs, strict=True)):
            wav = prompt_at_codec_rate(req.prompt_wav, req.prompt_sample_rate, self.sample_rate,
                                        f"request {i}")
            if cfg.prompt_level_db is not None:
                wav, gain = scale_to_level(wav, self.sample_rate, cfg.prompt_level_db)
                log.debug("request %d: prompt scaled by %+.1f dB to %.1f dB active level", i, gain,
                          cfg.prompt_level_db)
            limit = int(cfg.max_prompt_seconds * self.sample_rate)
            if wav.shape[-1] > limit:
                if _has_text(req.prompt_text):
                    log.warning("request %d: the prompt is %.1f s long; continuation mode keeps all of it "
                                "(its transcript covers all of it), which slows decoding", i,
                                wav.shape[-1] / self.sample_rate)
                else:  # speaker-prompt mode: a few seconds set the voice; the rest only costs time
                    wav = wav[..., -limit:]
            mono.append(wav)
        batch, lengths = pad_batch(mono)
        encoded = self.codec.encode(batch.to(self.codec.device), lengths, sample_rate=self.sample_rate)
        q = self.model.config.num_codebooks
        return [encoded.codes[b, :q, : int(encoded.frame_lengths[b])].cpu() for b in range(len(mono))]

    def _make_rows(self, requests: list[SynthesisRequest], configs: list[DecodeConfig],
                   prompts: list[torch.Tensor]) -> tuple[list[_Row], list[list[str]]]:
        rows, all_pieces = [], []
        for i, (req, cfg, codes) in enumerate(zip(requests, configs, prompts, strict=True)):
            if not isinstance(req.text, str) or not req.text.strip():  # before the aligner's work
                raise SynthesisError(f"request {i}: the text to synthesize is empty")
            voice = Voice(codes)
            if _has_text(req.prompt_text):
                phones = self._prompt_phones(i, req, codes.shape[-1]) if self.phone_aligned else None
                voice = Voice(codes, req.prompt_text, phones)
            request_rows, pieces = self.plan(req.text, voice, cfg, request=i)
            rows += request_rows
            all_pieces.append(pieces)
        return rows, all_pieces

    @property
    def phone_aligned(self) -> bool:
        return self.model.config.alignment == "phoneme"

    def _piece_phones(self, piece: str, cfg: DecodeConfig, pace: float | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """-> (the piece's phone ids, frames per phone with phone_durations="engine", else None), or None when
        it has nothing to say."""
        from data_pipeline.alignment.g2p import G2PError

        try:
            if cfg.phone_durations == "engine":
                return text_phone_frames(piece, self.codec.frame_rate, pace,
                                         self.model.config.max_phone_frames, cfg.speed)
            return text_phone_ids(piece), None
        except G2PError:
            return None

    def _house_voice(self, voice: Voice, cfg: DecodeConfig, request: int) -> HouseVoice | None:
        """The house voice the AR reads (ar_voice), or None: it reads the voice's own prompt."""
        if cfg.ar_voice == "prompt":
            return None
        if self.house_voices is None:
            raise SynthesisError(f"request {request}: ar_voice={cfg.ar_voice!r} needs house voices "
                                 f"({HOUSE_VOICES_FILE} in the export; scripts/make_house_voices.py); this "
                                 "model has none. Use ar_voice='prompt'")
        name = cfg.ar_voice
        if name == "house":
            if voice.house_voice is None:
                voice.house_voice = self.nearest_house_voice(voice.codes)
            name = voice.house_voice
        try:
            return self.house_voices.get(name)
        except KeyError as e:
            raise SynthesisError(f"request {request}: {e.args[0]}") from e

    def nearest_house_voice(self, codes: torch.Tensor) -> str:
        """The name of the house voice closest to a prompt's codes [Q, Fp]."""
        choice = self.house_voices.nearest_to_codes(codes, self.codec).name
        log.info("house voice for this prompt: %s", choice)
        return choice

    def _prompt_pace(self, voice: Voice) -> float | None:
        """Seconds per phone of the prompt speaker (continuation mode); None: flite's own pace."""
        if voice.prompt_phones is None or not _has_text(voice.prompt_text):
            return None
        return prompt_seconds_per_phone(voice.prompt_phones, voice.prompt_text, self.codec.frame_rate)

    @staticmethod
    def _prompt_phones(i: int, req: SynthesisRequest, frames: int) -> torch.Tensor:
        from data_pipeline.alignment.aligner import AlignmentError

        try:
            return prompt_frame_phones(req.prompt_wav, req.prompt_sample_rate, req.prompt_text, frames)
        except AlignmentError as e:
            raise SynthesisError(f"request {i}: the prompt audio does not fit its transcript ({e}); give the "
                                 "right prompt_text, or none for speaker-prompt mode") from e

    def _encode_text(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text), dtype=torch.long)

    def _generate(self, batch: list[_Row], generator: torch.Generator
                  ) -> list[Reading]:
        """One AR call for a batch of rows, the NAR for the rows worth hearing, then codec decode -> a
        `Reading` a row. Its wav and codes are None when best of N rules it out by its pace alone
        (`competing_readings`): its codebooks 2..Q and audio are never made (plan_batches keeps the readings
        of a piece in one batch, so that is known here)."""
        sampling, requests = self.batch_inputs(batch)
        ar = generate(self.model, requests, sampling, generator, compile_step=self.compile_step,
                      run_nar=False)
        paces: list[float | None] = [None] * len(batch)
        for b, row in enumerate(batch):
            if ar.frame_phones is not None and draws(row.decode) > 1:
                frames = ar.frame_phones[b, : int(ar.frame_lengths[b])].cpu()
                paces[b] = reading_pace(frames, row.text, self.codec.frame_rate)
        heard = readings_to_hear(batch, paces)
        out = fill_codebooks(self.model, [requests[b] for b in heard], ar.select(heard),
                             sampling.nar_temperature, generator)
        results = []
        for b, row in enumerate(batch):
            num_frames, wav, codes = int(ar.frame_lengths[b]), None, None
            if b in heard:
                codes = out.codes[heard.index(b), :, :num_frames]
                wav = self._decode(codes, row)
            results.append(Reading(wav, num_frames, bool(ar.hit_length_guard[b]), paces[b],
                                   None if codes is None else codes.cpu()))
        return results

    def batch_inputs(self, batch: list[_Row]) -> tuple[SamplingConfig, list[TTSRequest]]:
        """The generation settings and requests of one AR batch (per-row knobs from each row, the rest from
        the first row)."""
        vocab, cfg = self.model.vocab, batch[0].decode
        requests = [TTSRequest(r.text_ids, r.prompt_codes, r.prompt_text_ids, r.phone_ids, r.prompt_phones,
                               r.phone_durations, *self._house_prompt(r.house)) for r in batch]
        prefix = max(inference_prompt(vocab, r.text_ids, codes[0], text).numel()
                     for r in requests for codes, text, _ in [r.ar_prompt()])
        room = self.model.config.max_position_embeddings - prefix - 1
        if room < 1:
            raise SynthesisError(f"prompt + text take {prefix} tokens, the model holds "
                                 f"{self.model.config.max_position_embeddings}: use a shorter prompt or text")
        sampling = cfg.sampling(self.codec.frame_rate, room, max(r.text_ids.numel() for r in batch))
        sampling.temperature = [r.decode.temperature for r in batch]
        sampling.top_k = [r.decode.top_k for r in batch]
        sampling.top_p = [r.decode.top_p for r in batch]
        sampling.repetition_penalty = [r.decode.repetition_penalty for r in batch]
        return sampling, requests

    def _house_prompt(self, house: HouseVoice | None
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """A house voice as the AR's prompt: (codes, transcript ids, frame phones); transcript and phones
        only for a bank voice stored with them (continuation mode)."""
        if house is None:
            return None, None, None
        if house.text is None:
            return house.codes, None, None
        return house.codes, self._encode_text(house.text), house.phones

    def _decode(self, codes: torch.Tensor, row: _Row) -> np.ndarray:
        """Target codes [Q, F] -> wav [F * hop]. In continuation mode the tail of the prompt is decoded first
        (the codec's decoder state then continues the prompt's sound), and its samples are cut off again."""
        if codes.shape[-1] == 0:
            return np.zeros(0, dtype=np.float32)
        context = 0
        if row.prompt_text_ids is not None:
            context = min(row.prompt_codes.shape[-1],
                          int(row.decode.decode_context_seconds * self.codec.frame_rate))
        full = torch.cat([row.prompt_codes[:, row.prompt_codes.shape[-1] - context:], codes.cpu()], dim=-1)
        wav = self.codec.decode(full[None].to(self.codec.device))[0, 0]
        wav = wav[context * self.codec.hop_length:].float().cpu().numpy()
        if not np.isfinite(wav).all():
            raise RuntimeError("the codec decoded non-finite samples (NaN/inf): check the model and codec "
                               "weights")
        return wav

# ---- helpers -----------------------------------------------------------------------------------------------
def _adapts_ar(adapter: Path) -> bool:
    from lm.adapters.lora import adapter_adapts_ar

    return adapter_adapts_ar(adapter)


def _has_text(text: str | None) -> bool:
    return bool(text and text.strip())
