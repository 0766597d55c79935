"""Evaluation list parsing, writing and the same-speaker builder."""

from pathlib import Path

import pytest

from evaluation.cases import (
    EvalCase,
    build_same_speaker_list,
    read_librispeech_pc_list,
    read_list,
    write_list,
)


def test_read_list_resolves_paths_relative_to_the_list(tmp_path):
    lst = tmp_path / "sub" / "meta.lst"
    lst.parent.mkdir()
    lst.write_text("# comment\n\na|hi there|p.wav|hello world\nb||/abs/p.wav|bye|gt/b.wav\n")
    cases = read_list(lst)
    assert cases[0] == EvalCase("a", "hi there", lst.parent / "p.wav", "hello world", None)
    assert cases[1].prompt_wav == Path("/abs/p.wav")
    assert cases[1].ground_truth_wav == lst.parent / "gt" / "b.wav"
    assert cases[1].prompt_text == ""
    assert len(read_list(lst, limit=1)) == 1


@pytest.mark.parametrize("line, message", [
    ("a|b|c", "expected 4 or 5"),
    ("a|b|c|d|e|f", "expected 4 or 5"),
    ("a|b||d", "must be non-empty"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    lst = tmp_path / "bad.lst"
    lst.write_text(f"ok|t|p.wav|x\n{line}\n")
    with pytest.raises(ValueError, match=rf"bad\.lst:2: .*{message}"):
        read_list(lst)


def test_duplicate_ids_and_empty_lists_are_rejected(tmp_path):
    lst = tmp_path / "dup.lst"
    lst.write_text("a|t|p.wav|x\na|t|p.wav|y\n")
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        read_list(lst)
    lst.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no cases"):
        read_list(lst)
    with pytest.raises(FileNotFoundError, match="missing.lst"):
        read_list(tmp_path / "missing.lst")


def test_write_then_read_round_trip(tmp_path):
    audio = tmp_path / "a"
    cases = [EvalCase("x", "prompt words", audio / "p.wav", "target words", audio / "t.wav")]
    write_list(cases, tmp_path / "lists" / "out.lst")
    assert "../a/p.wav" in (tmp_path / "lists" / "out.lst").read_text()
    assert read_list(tmp_path / "lists" / "out.lst") == cases


def test_same_speaker_list_pairs_different_utterances_of_one_speaker(speech_dir):
    cases = build_same_speaker_list(speech_dir)
    assert len(cases) == 44  # 33 LJ + 6 arctic + 5 librivox clips, each a target once
    for c in cases:
        assert c.prompt_wav != c.ground_truth_wav, c.id
        assert c.prompt_wav.parent == c.ground_truth_wav.parent, c.id
        speaker = c.id.split("__")[0]
        assert c.ground_truth_wav.stem == c.id.split("__")[1]
        assert speaker in {"LJ", "arctic-aew", "arctic-axb", "librivox-ss01-reader"}
    # arctic aew and axb share a folder: the prompt must come from the same speaker, not just the same folder.
    for c in cases:
        if c.id.startswith("arctic-"):
            assert c.id.split("_")[-2] in c.prompt_wav.stem, c.id
    # interleaved: the first four cases cover all four speakers
    assert len({c.id.split("__")[0] for c in cases[:4]}) == 4


def _resolved(cases):
    return [(c.id, c.prompt_text, c.prompt_wav.resolve(), c.target_text, c.ground_truth_wav.resolve())
            for c in cases]


def test_committed_repo_list_matches_the_builder(speech_dir, repo_list, tmp_path):
    fresh = tmp_path / "fresh.lst"
    write_list(build_same_speaker_list(speech_dir), fresh)
    committed = read_list(repo_list)
    assert _resolved(committed) == _resolved(read_list(fresh))
    for case in committed:
        assert case.prompt_wav.is_file() and case.ground_truth_wav.is_file(), case.id


def test_four_field_lines_find_seed_tts_eval_ground_truth_in_wavs(tmp_path):
    (tmp_path / "wavs").mkdir()
    (tmp_path / "wavs" / "u1.wav").write_bytes(b"")
    (tmp_path / "meta.lst").write_text("u1|p|prompt-wavs/p1.wav|t\nu2|p|prompt-wavs/p2.wav|t\n")
    u1, u2 = read_list(tmp_path / "meta.lst")
    assert u1.ground_truth_wav == tmp_path / "wavs" / "u1.wav"
    assert u2.ground_truth_wav is None


def test_librispeech_pc_cross_sentence_list(tmp_path):
    lst = tmp_path / "librispeech_pc_test_clean_cross_sentence.lst"
    fields = ["1089-134686-0000", "10.4", "He hoped there would be stew.", "1089-134686-0002", "4.9",
              "After early nightfall."]
    lst.write_text("\t".join(fields) + "\n")
    (case,) = read_librispeech_pc_list(lst, tmp_path / "test-clean")
    assert case.id == "1089-134686-0002"
    assert case.prompt_wav == tmp_path / "test-clean" / "1089" / "134686" / "1089-134686-0000.flac"
    assert case.ground_truth_wav == tmp_path / "test-clean" / "1089" / "134686" / "1089-134686-0002.flac"
    assert (case.prompt_text, case.target_text) == ("He hoped there would be stew.", "After early nightfall.")
    lst.write_text("1089-134686-0000|x|y|z\n")
    with pytest.raises(ValueError, match=r"cross_sentence\.lst:1: expected 6 tab-separated"):
        read_librispeech_pc_list(lst, tmp_path)
