"""Generation, gpt-fast style: prefill once, then one token a step against the static KV cache owned by the AR
decoder; then one NAR pass per codebook the AR does not predict.

  prefill(ar, tokens, pads)                   -> (code-head logits, delayed-codebook logits or None, phone
                                                 advance logit or None) of the last prefix position
  decode_one_token(ar, token, input_pos, pads) -> the same for the next position (the only compile target)
                                              (both in lm/inference/decode_steps.py)
  generate_ar(model, prompts, text_lengths, ...) batched rows that stop independently (`finished` masks), a
                                              length guard tied to the text length, a minimum length
                                              (lm/inference/ar_loop.py)
  generate_nar(model, ...)                    codebooks ar_codebooks+1..Q, one bidirectional pass each
                                              (lm/inference/nar_pass.py)
  generate(model, requests, ...)              both, from `TTSRequest`s (what the Synthesizer calls; here)
  fill_codebooks(model, requests, ar_result)  the NAR half of `generate`, for the AR rows a caller keeps
                                              (best of N fills only the readings that compete; here)

Rows of a batch are left-padded so they all end at the same cache slot; each row's RoPE positions start at 0
at its first real token, so a row generates the same tokens alone or in a batch (tested).

Shape letters: B batch, P prefix tokens, S cache slots, V code-head classes (K codes + <eos>), Q codebooks, F
frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from lm.inference.ar_loop import StepCallback, generate_ar
from lm.inference.nar_pass import generate_nar
from lm.inference.sampling import SamplingConfig
from lm.model.model import TTSModel
from lm.model.sequence import inference_delayed, inference_prompt, prefix_phone_inputs

log = logging.getLogger(__name__)


# -- requests -> all codebooks -------------------------------------------------------------------------------
@dataclass
class TTSRequest:
    """One utterance to synthesise. text ids are raw text-piece ids (data_pipeline's TextTokenizer).

    prompt_codes [Q', Fp] codes of the voice prompt (Q' >= the model's Q; extra codebooks are dropped).
    prompt_text_ids: the prompt's transcript -> continuation mode; None -> speaker-prompt mode.
    phone_ids [P]: a phone-aligned model's target phones (lm.inference.phone_alignment.text_phone_ids);
    phone_durations [P]: frames to hold each of them (default: the model's advance head decides);
    prompt_phones [Fp]: in continuation mode, the phone of each prompt frame (from the aligner).
    ar_prompt_codes [Q', Fa]: the AR's own voice prompt (a house voice, lm/inference/house_voices.py), with
    ar_prompt_text_ids and ar_prompt_phones [Fa] in continuation mode, without in speaker-prompt mode; the NAR
    still reads prompt_codes. None: the AR reads the prompt as above.
    """

    text_ids: torch.Tensor
    prompt_codes: torch.Tensor
    prompt_text_ids: torch.Tensor | None = None
    phone_ids: torch.Tensor | None = None
    prompt_phones: torch.Tensor | None = None
    phone_durations: torch.Tensor | None = None
    ar_prompt_codes: torch.Tensor | None = None
    ar_prompt_text_ids: torch.Tensor | None = None
    ar_prompt_phones: torch.Tensor | None = None

    def ar_prompt(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(codes, transcript ids, frame phones) of the prompt the AR reads."""
        if self.ar_prompt_codes is None:
            return self.prompt_codes, self.prompt_text_ids, self.prompt_phones
        return self.ar_prompt_codes, self.ar_prompt_text_ids, self.ar_prompt_phones


@dataclass
class GenerationResult:
    codes: torch.Tensor  # [B, Q, F], 0 past each length
    frame_lengths: torch.Tensor  # [B]
    hit_length_guard: torch.Tensor  # [B] bool
    frame_phones: torch.Tensor | None = None  # [B, F] the phone id each frame was made for (phone-aligned)

    def select(self, rows: list[int]) -> GenerationResult:
        """The result of `rows` only, in that order."""
        def pick(x: torch.Tensor) -> torch.Tensor:
            return x[torch.tensor(rows, dtype=torch.long, device=x.device)]

        return GenerationResult(pick(self.codes), pick(self.frame_lengths), pick(self.hit_length_guard),
                                None if self.frame_phones is None else pick(self.frame_phones))


def _check_request(i: int, req: TTSRequest, model: TTSModel) -> None:
    cfg = model.config
    if req.text_ids.dim() != 1 or req.text_ids.numel() == 0:
        raise ValueError(
            f"request {i}: text_ids must be a non-empty 1-D tensor, got {tuple(req.text_ids.shape)}"
        )
    if int(req.text_ids.min()) < 0 or int(req.text_ids.max()) >= cfg.text_vocab_size:
        raise ValueError(f"request {i}: text ids outside [0, {cfg.text_vocab_size})")
    for name, pc in (("prompt_codes", req.prompt_codes), ("ar_prompt_codes", req.ar_prompt_codes)):
        if pc is None:
            continue
        if pc.dim() != 2 or pc.shape[0] < cfg.num_codebooks or pc.shape[1] == 0:
            raise ValueError(
                f"request {i}: {name} must be [Q>={cfg.num_codebooks}, Fp>0], got {tuple(pc.shape)}"
            )
        if int(pc.min()) < 0 or int(pc.max()) >= cfg.codebook_size:
            raise ValueError(f"request {i}: {name} outside [0, {cfg.codebook_size})")
    d = req.phone_durations
    if d is not None and (req.phone_ids is None or d.shape != req.phone_ids.shape or int(d.min()) < 1):
        raise ValueError(f"request {i}: phone_durations must be >= 1 frame for each of its phone_ids")


@torch.inference_mode()
def generate(
    model: TTSModel,
    requests: list[TTSRequest],
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    compile_step: bool = False,
    progress: bool = False,
    on_step: StepCallback | None = None,
    run_nar: bool = True,
) -> GenerationResult:
    """Requests -> all Q codebooks of each target (AR with KV cache, then Q-1 NAR passes).

    on_step: passed to `generate_ar`. run_nar=False returns the AR's codebooks only ([B, ar_codebooks, F]):
    a streaming caller runs the NAR itself, on chunks."""
    sampling = sampling or SamplingConfig()
    for i, req in enumerate(requests):
        _check_request(i, req, model)
    vocab = model.vocab
    ar_views = [r.ar_prompt() for r in requests]  # (codes, transcript, frame phones) the AR reads
    prompts = [inference_prompt(vocab, r.text_ids, codes[0], text) for r, (codes, text, _) in
               zip(requests, ar_views, strict=True)]
    text_lengths = torch.tensor([r.text_ids.numel() for r in requests])
    num_ar = model.config.ar_codebooks
    delayed_prefixes = first_delayed = None
    if num_ar > 1:
        delayed = [
            inference_delayed(r.text_ids, codes[1:num_ar], text) for r, (codes, text, _) in
            zip(requests, ar_views, strict=True)
        ]
        delayed_prefixes = [d[0] for d in delayed]
        first_delayed = torch.stack([d[1] for d in delayed])
    phone_seqs = prefix_phones = None
    if model.config.alignment == "phoneme":
        missing = [i for i, r in enumerate(requests) if r.phone_ids is None or r.phone_ids.numel() == 0]
        if missing:
            raise ValueError(f"requests {missing}: a phone-aligned model needs the target's phone_ids")
        phone_seqs = [r.phone_ids.long() for r in requests]
        prefix_phones = [prefix_phone_inputs(p.numel(), phones if text is not None else None)
                         for p, (_, text, phones) in zip(prompts, ar_views, strict=True)]
    ar_out = generate_ar(
        model,
        prompts,
        text_lengths,
        sampling,
        generator,
        compile_step=compile_step,
        progress=progress,
        delayed_prefixes=delayed_prefixes,
        first_delayed=first_delayed,
        phone_seqs=phone_seqs,
        prefix_phones=prefix_phones,
        on_step=on_step,
        phone_durations=[r.phone_durations for r in requests] if phone_seqs is not None else None,
    )
    ar_codes = ar_out.codes[:, None]
    if ar_out.delayed_codes is not None:
        ar_codes = torch.cat([ar_codes, ar_out.delayed_codes], dim=1)  # [B, A, F]
    if bool(ar_out.hit_length_guard.any()):
        rows = ar_out.hit_length_guard.nonzero().flatten().tolist()
        log.warning("rows %s hit the length guard without emitting <eos> (output truncated)", rows)
    ar_result = GenerationResult(ar_codes, ar_out.lengths, ar_out.hit_length_guard, ar_out.frame_phones)
    if not run_nar:
        return ar_result
    return fill_codebooks(model, requests, ar_result, sampling.nar_temperature, generator)


@torch.inference_mode()
def fill_codebooks(model: TTSModel, requests: list[TTSRequest], ar_result: GenerationResult,
                   nar_temperature: float = 0.0, generator: torch.Generator | None = None
                   ) -> GenerationResult:
    """The NAR half of `generate`: `ar_result` (from `generate(..., run_nar=False)`, or rows of it picked with
    `select`) and the requests of its rows -> all Q codebooks of each row."""
    if not requests or len(requests) != ar_result.codes.shape[0]:
        raise ValueError(f"{len(requests)} requests for {ar_result.codes.shape[0]} AR rows")
    if model.nar is None:
        return ar_result
    num_q = model.config.num_codebooks
    device = model.ar.code_head.weight.device
    bsz = len(requests)
    text_lengths = torch.tensor([r.text_ids.numel() for r in requests])
    text_ids = torch.zeros(bsz, int(text_lengths.max()), dtype=torch.long)
    prompt_lengths = torch.tensor([r.prompt_codes.shape[1] for r in requests])
    prompt_codes = torch.zeros(bsz, num_q, int(prompt_lengths.max()), dtype=torch.long)
    for b, r in enumerate(requests):
        text_ids[b, : r.text_ids.numel()] = r.text_ids.cpu()
        prompt_codes[b, :, : r.prompt_codes.shape[1]] = r.prompt_codes[:num_q].cpu()
    codes = generate_nar(
        model,
        text_ids.to(device),
        text_lengths.to(device),
        prompt_codes.to(device),
        prompt_lengths.to(device),
        ar_result.codes,
        ar_result.frame_lengths,
        nar_temperature,
        generator,
        frame_phones=ar_result.frame_phones,
    )
    return GenerationResult(
        codes=codes, frame_lengths=ar_result.frame_lengths, hit_length_guard=ar_result.hit_length_guard,
        frame_phones=ar_result.frame_phones,
    )
