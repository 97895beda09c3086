"""The vLLM backend against a test double of vLLM (vLLM needs a CUDA GPU and is not installed here).

``fake_vllm`` puts a small fake ``vllm`` package into ``sys.modules``: ``FakeLLM`` records the
arguments the engine and each ``generate`` call receive and answers every request from its seed,
and the fake ``SamplingParams``/``LLM`` refuse arguments the real ones do not take. What the
tests check is what the backend asks of vLLM and how it stores vLLM's answers; vLLM's own
sampling is not exercised here.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest
import torch
from transformers import AutoTokenizer

from rlhf_eval import tiny, vllm_backend
from rlhf_eval.errors import UserInputError
from rlhf_eval.generate import EncodedPrompt, GenerationRequest, encode_prompts, eos_token_ids
from rlhf_eval.models import LoadOptions
from rlhf_eval.records import Prompt
from rlhf_eval.sampling import SamplingParams, sample_seed
from rlhf_eval.vllm_backend import VLLMBackend

EOS = 1  # the word tokenizers' <eos> (conftest: <pad> 0, <eos> 1, <unk> 2, then the words)
FIRST_WORD = 3


# -- the test double of vllm --------------------------------------------------------------------

#: Fields of vllm.SamplingParams the backend may set (a subset of the real class's).
SAMPLING_FIELDS = {
    "n", "temperature", "top_p", "top_k", "min_p", "seed", "stop_token_ids", "ignore_eos", "max_tokens",
    "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens", "presence_penalty",
    "frequency_penalty", "repetition_penalty",
}  # fmt: skip
#: Arguments of vllm.LLM (EngineArgs) the backend may pass.
LLM_ARGS = {
    "model", "tokenizer", "dtype", "seed", "trust_remote_code", "load_format", "generation_config",
    "enforce_eager", "gpu_memory_utilization", "max_model_len", "enable_lora", "max_lora_rank", "max_loras",
}  # fmt: skip


class FakeSamplingParams:
    """Test double of vllm.SamplingParams: keeps its fields, refuses unknown ones."""

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"unexpected SamplingParams fields {sorted(unknown)}")
        self.seed: int | None = None
        self.max_tokens: int = 16
        self.stop_token_ids: list[int] = []
        self.logprobs: int | None = None
        self.prompt_logprobs: int | None = None
        self.__dict__.update(kwargs)


class FakeTokensPrompt(TypedDict):
    """Test double of vllm.inputs.TokensPrompt (a TypedDict in vLLM too)."""

    prompt_token_ids: list[int]


class FakeLoRARequest:
    """Test double of vllm.lora.request.LoRARequest(lora_name, lora_int_id, lora_path)."""

    def __init__(self, lora_name: str, lora_int_id: int, lora_path: str) -> None:
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeCompletion:
    def __init__(self, token_ids: list[int], finish_reason: str, stop_reason: int | str | None) -> None:
        self.token_ids, self.finish_reason, self.stop_reason = token_ids, finish_reason, stop_reason


class FakeRequestOutput:
    def __init__(self, prompt_token_ids: list[int], completion: FakeCompletion) -> None:
        self.prompt_token_ids, self.outputs = prompt_token_ids, [completion]


def fake_completion(params: FakeSamplingParams, *, keep_stop_token: bool) -> FakeCompletion:
    """What the fake engine answers: a length drawn from the seed (1 to max_tokens + 1; above
    max_tokens means no EOS), words drawn from the seed, then the first stop id."""
    rng = random.Random(params.seed)
    length = rng.randint(1, params.max_tokens + 1)
    if length > params.max_tokens:
        return FakeCompletion([rng.randrange(FIRST_WORD, 40) for _ in range(params.max_tokens)], "length", None)
    words = [rng.randrange(FIRST_WORD, 40) for _ in range(length - 1)]
    stop = params.stop_token_ids[0]
    return FakeCompletion(words + [stop] if keep_stop_token else words, "stop", stop)


class FakeLLM:
    """Test double of vllm.LLM: records its arguments and every generate call."""

    instances: list[FakeLLM] = []
    #: like vLLM (V1), keep the stop token in token_ids; False mimics a version that drops it
    keep_stop_token = True
    #: return the outputs in reverse order (an engine that breaks the order contract)
    reverse = False

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - LLM_ARGS
        if unknown:
            raise TypeError(f"unexpected LLM arguments {sorted(unknown)}")
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []
        self.shut_down = False
        # vLLM V1: LLM.llm_engine.engine_core runs in a child process and has shutdown()
        self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=self.shutdown))
        FakeLLM.instances.append(self)

    def shutdown(self) -> None:
        self.shut_down = True

    def generate(
        self,
        prompts: list[FakeTokensPrompt],
        sampling_params: list[FakeSamplingParams],
        *,
        lora_request: Any = None,
        use_tqdm: bool = True,
    ) -> list[FakeRequestOutput]:
        assert len(prompts) == len(sampling_params)
        self.calls.append({"prompts": prompts, "params": sampling_params, "lora": lora_request, "tqdm": use_tqdm})
        outputs = [
            FakeRequestOutput(prompt["prompt_token_ids"], fake_completion(params, keep_stop_token=self.keep_stop_token))
            for prompt, params in zip(prompts, sampling_params, strict=True)
        ]
        return outputs[::-1] if self.reverse else outputs


def fake_vllm_modules() -> dict[str, types.ModuleType]:
    package = types.ModuleType("vllm")
    package.__path__ = []
    inputs = types.ModuleType("vllm.inputs")
    lora = types.ModuleType("vllm.lora")
    lora.__path__ = []
    request = types.ModuleType("vllm.lora.request")
    vars(package).update(LLM=FakeLLM, SamplingParams=FakeSamplingParams, inputs=inputs, lora=lora)
    vars(inputs).update(TokensPrompt=FakeTokensPrompt)
    vars(lora).update(request=request)
    vars(request).update(LoRARequest=FakeLoRARequest)
    return {"vllm": package, "vllm.inputs": inputs, "vllm.lora": lora, "vllm.lora.request": request}


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeLLM]]:
    """The fake vllm importable, a CUDA GPU "visible", no engine cached."""
    for name, module in fake_vllm_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(FakeLLM, "instances", [])
    monkeypatch.setattr(FakeLLM, "keep_stop_token", True)
    monkeypatch.setattr(FakeLLM, "reverse", False)
    vllm_backend.release_engines()
    yield FakeLLM
    vllm_backend.release_engines()


# -- inputs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(word_tokenizer_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(word_tokenizer_dir))


def make_requests(tokenizer: Any, n_prompts: int = 3, n_samples: int = 4, seed: int = 0) -> list[GenerationRequest]:
    texts = ["the cat sat", "explain why sky is blue", "list three good ideas", "a dog runs fast"]
    prompts = [Prompt(f"p{i}", i, text=texts[i % len(texts)]) for i in range(n_prompts)]
    encoded = encode_prompts(prompts, tokenizer, max_prompt_tokens=32)
    return [
        GenerationRequest(f"s{e.prompt.index}-{j}", e, j, sample_seed(seed, e.prompt.prompt_id, j))
        for e in encoded
        for j in range(n_samples)
    ]


PARAMS = SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=6)


# -- require_vllm -------------------------------------------------------------------------------


def test_require_vllm_says_how_to_install_when_vllm_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ModuleNotFoundError
    with pytest.raises(UserInputError) as info:
        vllm_backend.require_vllm()
    message = str(info.value)
    assert message == (
        "--backend vllm: vLLM is not installed; install the extra with pip install 'rlhf-eval[vllm]' "
        "(needs a CUDA GPU), or use --backend transformers"
    )
    assert "\n" not in message


def test_require_vllm_needs_a_gpu(fake_vllm: type[FakeLLM], monkeypatch: pytest.MonkeyPatch) -> None:
    vllm_backend.require_vllm()  # the fake is importable and a GPU "visible": passes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        UserInputError, match=r"^--backend vllm needs a CUDA GPU and none is visible; use --backend transformers$"
    ):
        vllm_backend.require_vllm()


def test_load_checks_vllm_before_anything(tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserInputError, match="vLLM is not installed"):
        VLLMBackend.load(tmp_path, tokenizer, PARAMS, LoadOptions())


def test_importing_the_module_never_imports_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setitem(sys.modules, "vllm", None)
    module = importlib.reload(vllm_backend)  # would raise if vllm were imported at the top
    assert module.SAMPLER_VERSION == "vllm-seeded-v1"


# -- engine arguments ---------------------------------------------------------------------------


def test_engine_arguments(fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any) -> None:
    VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    (llm,) = fake_vllm.instances
    assert llm.kwargs == {
        "model": str(gpt2_ref.resolve()),
        "dtype": "bfloat16",
        "seed": 0,
        "trust_remote_code": False,
        "load_format": "safetensors",
        "generation_config": "vllm",  # the checkpoint's generation_config.json is ignored
        "enforce_eager": False,
        "gpu_memory_utilization": 0.5,
    }


def test_allow_pickle_lets_vllm_choose_the_format(fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any) -> None:
    options = LoadOptions(allow_pickle=True, trust_remote_code=True)
    VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, options, dtype="float16", enforce_eager=True, max_model_len=128)
    kwargs = fake_vllm.instances[0].kwargs
    assert (kwargs["load_format"], kwargs["trust_remote_code"]) == ("auto", True)
    assert (kwargs["dtype"], kwargs["enforce_eager"], kwargs["max_model_len"]) == ("float16", True, 128)


def test_pickle_only_weights_are_refused_before_vllm_loads(
    fake_vllm: type[FakeLLM], pickle_only_dir: Path, tokenizer: Any
) -> None:
    with pytest.raises(UserInputError, match="--allow-pickle"):
        VLLMBackend.load(pickle_only_dir, tokenizer, PARAMS, LoadOptions())
    assert fake_vllm.instances == []


def test_engine_errors_become_one_line(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> None:
        raise ValueError("Model architectures ['X'] are not supported for now.\ntraceback details")

    monkeypatch.setattr(sys.modules["vllm"], "LLM", broken)
    with pytest.raises(UserInputError) as info:
        VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    assert "vLLM could not load this model (ValueError: Model architectures ['X'] are not supported" in str(info.value)
    assert "\n" not in str(info.value) and "--backend transformers" in str(info.value)


# -- sampling settings --------------------------------------------------------------------------


def test_sampling_settings_per_request(fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any) -> None:
    backend = VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    requests = make_requests(tokenizer)
    (batch,) = backend.plan(requests)
    backend.generate(batch)
    (call,) = fake_vllm.instances[0].calls
    assert call["lora"] is None and call["tqdm"] is False
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [list(r.encoded.token_ids) for r in batch]
    assert [p.seed for p in call["params"]] == [r.seed for r in batch]  # each request its own seed
    assert len({p.seed for p in call["params"]}) == len(batch)
    for p in call["params"]:
        assert (p.n, p.temperature, p.top_p, p.top_k, p.max_tokens) == (1, 0.7, 0.9, -1, 6)  # top_k 0 -> -1
        assert (p.min_p, p.repetition_penalty, p.presence_penalty, p.frequency_penalty) == (0.0, 1.0, 0.0, 0.0)
        assert p.stop_token_ids == [EOS] and p.ignore_eos is True
        assert p.logprobs is None and p.prompt_logprobs is None
        assert p.detokenize is False and p.skip_special_tokens is True


def test_top_k_is_passed_when_set(fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any) -> None:
    backend = VLLMBackend.load(gpt2_ref, tokenizer, SamplingParams(top_k=5), LoadOptions())
    assert backend.sampling_params(make_requests(tokenizer, 1, 1)[0]).top_k == 5


def test_stop_ids_are_the_transformers_backends_eos_ids(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any, tmp_path: Path
) -> None:
    """A generation config that ends turns with its own token (ids 1 and 7): both stop."""
    model = shutil.copytree(gpt2_ref, tmp_path / "model")
    config = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": [EOS, 7]}))
    backend = VLLMBackend.load(model, tokenizer, PARAMS, LoadOptions())
    assert backend.eos_ids == [EOS, 7]
    from transformers import AutoModelForCausalLM

    assert backend.eos_ids == eos_token_ids(AutoModelForCausalLM.from_pretrained(str(model)), tokenizer)


def test_no_engine_logprobs_guard() -> None:
    vllm_backend.check_no_engine_logprobs(FakeSamplingParams(temperature=1.0))
    with pytest.raises(ValueError, match="logprobs=1.*processed_logprobs"):
        vllm_backend.check_no_engine_logprobs(FakeSamplingParams(logprobs=1))
    with pytest.raises(ValueError, match="prompt_logprobs=0"):
        vllm_backend.check_no_engine_logprobs(FakeSamplingParams(prompt_logprobs=0))


def test_every_built_sampling_params_is_guarded(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vLLM whose SamplingParams defaulted to returning log-probs would be refused."""

    class LogprobsByDefault(FakeSamplingParams):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.logprobs = 5

    backend = VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    monkeypatch.setattr(sys.modules["vllm"], "SamplingParams", LogprobsByDefault)
    with pytest.raises(ValueError, match="never asks the engine for log-probs"):
        backend.generate(make_requests(tokenizer, 1, 1))
    assert fake_vllm.instances[0].calls == []


# -- outputs ------------------------------------------------------------------------------------


def expected(request: GenerationRequest, params: SamplingParams) -> list[int]:
    """The fake's answer for a request, with the EOS kept (as stored)."""
    fake = FakeSamplingParams(seed=request.seed, max_tokens=params.max_new_tokens, stop_token_ids=[EOS])
    return fake_completion(fake, keep_stop_token=True).token_ids


@pytest.mark.parametrize("keep_stop_token", [True, False], ids=["vllm-keeps-eos", "vllm-drops-eos"])
def test_outputs_like_the_transformers_backend(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any, keep_stop_token: bool
) -> None:
    fake_vllm.keep_stop_token = keep_stop_token
    backend = VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    batch = list(reversed(make_requests(tokenizer, n_prompts=4, n_samples=5)))  # any order is kept
    samples = backend.generate(batch)
    assert [s.request for s in samples] == batch
    ends = {"eos": 0, "length": 0}
    for sample in samples:
        tokens = expected(sample.request, PARAMS)
        assert list(sample.token_ids) == tokens  # the EOS stored once, whether vLLM kept it or not
        if sample.ended_eos:
            ends["eos"] += 1
            assert tokens[-1] == EOS and EOS not in tokens[:-1] and len(tokens) <= PARAMS.max_new_tokens
            body = tokens[:-1]
        else:  # "length": max_new_tokens words, nothing appended
            ends["length"] += 1
            assert len(tokens) == PARAMS.max_new_tokens and EOS not in tokens
            body = tokens
        assert sample.text == tokenizer.decode(body, skip_special_tokens=True)  # our tokenizer's text
        assert sample.n_tokens == len(tokens)
    assert ends["eos"] > 0 and ends["length"] > 0  # both endings were exercised (20 seeds)


def test_eos_in_the_middle_cuts_the_response(fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any) -> None:
    """Token ids after the first EOS (an engine that went on) are dropped, as in _finish."""
    backend = VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    request = make_requests(tokenizer, 1, 1)[0]
    output = FakeRequestOutput(list(request.encoded.token_ids), FakeCompletion([5, 6, EOS, 7, EOS], "stop", EOS))
    sample = backend._finish(request, output)
    assert (sample.token_ids, sample.ended_eos, sample.text) == ((5, 6, EOS), True, tokenizer.decode([5, 6]))


def test_a_stop_without_our_eos_is_an_error(fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any) -> None:
    backend = VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    request = make_requests(tokenizer, 1, 1)[0]
    for completion in (FakeCompletion([5, 6], "stop", None), FakeCompletion([5], "abort", None)):
        with pytest.raises(RuntimeError, match="vLLM"):
            backend._finish(request, FakeRequestOutput(list(request.encoded.token_ids), completion))


def test_outputs_out_of_order_are_refused(fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any) -> None:
    fake_vllm.reverse = True
    backend = VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    with pytest.raises(RuntimeError, match="out of order"):
        backend.generate(make_requests(tokenizer, 2, 1))


def test_plan_is_deterministic_and_covers_every_request(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any
) -> None:
    backend = VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions(), max_batch=5)
    requests = make_requests(tokenizer, n_prompts=3, n_samples=4)
    shuffled = random.Random(1).sample(requests, len(requests))
    plan = backend.plan(shuffled)
    assert plan == backend.plan(requests)  # same requests, same batches, whatever their order
    assert [len(b) for b in plan] == [5, 5, 2]  # 12 requests in batches of at most 5
    assert [r.sample_id for b in plan for r in b] == [r.sample_id for r in requests]
    assert backend.generate([]) == []


# -- LoRA ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_lora_dir(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path) -> Path:
    return tiny.build_lora_adapter(gpt2_ref, tmp_path_factory.mktemp("lora2") / "adapter", seed=11)


@pytest.fixture(scope="module")
def rank12_lora_dir(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path) -> Path:
    return tiny.build_lora_adapter(gpt2_ref, tmp_path_factory.mktemp("lora12") / "adapter", r=12, seed=12)


def test_lora_adapters_share_one_unmerged_base_engine(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, lora_dir: Path, second_lora_dir: Path, tokenizer: Any
) -> None:
    first = VLLMBackend.load(lora_dir, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref)
    second = VLLMBackend.load(second_lora_dir, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref)
    again = VLLMBackend.load(lora_dir, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref)
    (llm,) = fake_vllm.instances  # the base is served once for both adapters
    assert first.llm is second.llm is again.llm is llm
    assert llm.kwargs["model"] == str(gpt2_ref.resolve())
    # the adapters have r=4: the smallest rank vLLM serves, 8
    assert (llm.kwargs["enable_lora"], llm.kwargs["max_lora_rank"], llm.kwargs["max_loras"]) == (True, 8, 1)
    assert first.lora.lora_path == str(lora_dir.resolve())
    assert second.lora.lora_path == str(second_lora_dir.resolve())
    assert first.lora.lora_int_id != second.lora.lora_int_id  # vLLM caches adapters by id
    assert first.lora.lora_name != second.lora.lora_name
    assert (again.lora.lora_int_id, again.lora.lora_name) == (first.lora.lora_int_id, first.lora.lora_name)
    first.generate(make_requests(tokenizer, 1, 2))
    second.generate(make_requests(tokenizer, 1, 2))
    assert [call["lora"] for call in llm.calls] == [first.lora, second.lora]  # one request per generate call


def test_a_larger_adapter_rebuilds_the_engine(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, lora_dir: Path, rank12_lora_dir: Path, tokenizer: Any
) -> None:
    VLLMBackend.load(lora_dir, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref)
    VLLMBackend.load(rank12_lora_dir, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref)
    VLLMBackend.load(lora_dir, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref)  # fits rank 16
    assert [llm.kwargs["max_lora_rank"] for llm in fake_vllm.instances] == [8, 16]


def test_another_model_releases_the_cached_engine(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, lora_dir: Path, tokenizer: Any
) -> None:
    VLLMBackend.load(lora_dir, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref)
    VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())  # same path, no LoRA: another engine
    VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions(), dtype="float16")  # another dtype: another
    VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions(), dtype="float16")  # cached
    assert len(fake_vllm.instances) == 3
    assert len(vllm_backend._ENGINES) == 1  # one engine on the GPU at a time
    assert [llm.shut_down for llm in fake_vllm.instances] == [True, True, False]


def test_lora_rank_rounding(tmp_path: Path) -> None:
    def adapter(name: str, config: dict[str, Any]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(config))
        return folder

    assert vllm_backend.adapter_rank(adapter("plain", {"r": 16})) == 16
    assert vllm_backend.adapter_rank(adapter("pattern", {"r": 8, "rank_pattern": {"q_proj": 40}})) == 40
    assert [vllm_backend.vllm_lora_rank(r) for r in (1, 8, 9, 40, 128, 200)] == [8, 8, 16, 64, 128, 256]
    with pytest.raises(UserInputError, match="LoRA rank 300 is above the largest rank vLLM serves"):
        vllm_backend.vllm_lora_rank(300)
    with pytest.raises(UserInputError, match="no positive LoRA rank"):
        vllm_backend.adapter_rank(adapter("no-rank", {"peft_type": "LORA"}))
    with pytest.raises(UserInputError, match="no adapter_config.json"):
        vllm_backend.adapter_rank(tmp_path)


def test_an_adapter_of_too_high_rank_is_refused_before_vllm_loads(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, lora_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    adapter = shutil.copytree(lora_dir, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "r": 512}))
    with pytest.raises(UserInputError, match="use --backend transformers"):
        VLLMBackend.load(adapter, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref)
    assert fake_vllm.instances == []


def test_a_rewritten_adapter_gets_a_new_lora_id(
    fake_vllm: type[FakeLLM], gpt2_ref: Path, lora_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    """vLLM caches adapters by id: an adapter directory saved again must not reuse the old weights."""
    import os

    adapter = shutil.copytree(lora_dir, tmp_path / "adapter")
    before = VLLMBackend.load(adapter, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref).lora
    weights = adapter / "adapter_model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = VLLMBackend.load(adapter, tokenizer, PARAMS, LoadOptions(), adapter_base=gpt2_ref).lora
    assert after.lora_int_id != before.lora_int_id and after.lora_path == before.lora_path


def test_encoded_prompt_ids_reach_vllm_unchanged(fake_vllm: type[FakeLLM], gpt2_ref: Path, tokenizer: Any) -> None:
    """Prompts go in as token ids (TokensPrompt): vLLM never re-tokenizes them."""
    backend = VLLMBackend.load(gpt2_ref, tokenizer, PARAMS, LoadOptions())
    encoded = EncodedPrompt(Prompt("p", 0, text="ignored"), (4, 5, 6), False)
    backend.generate([GenerationRequest("s", encoded, 0, 123)])
    assert fake_vllm.instances[0].calls[0]["prompts"] == [{"prompt_token_ids": [4, 5, 6]}]


# -- through the evaluator ----------------------------------------------------------------------


def test_eval_with_the_vllm_backend_stores_its_tokens_and_recomputes_kl(
    fake_vllm: type[FakeLLM], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpt2_ref: Path, gpt2_variant_a: Path,
    lora_dir: Path, reward_model_dir: Path,
) -> None:  # fmt: skip
    """``rlhf-eval eval --backend vllm``: the engine's tokens are stored (EOS included), its
    samples get their own generation key (a transformers run on the same database samples
    again instead of reusing them), the adapter is served unmerged on its base, and KL is the
    teacher-forced one of the stored tokens (recomputed here with the policy's own forward)."""
    import duckdb
    from click.testing import CliRunner

    from rlhf_eval.cli import app
    from rlhf_eval.models import load_causal_lm

    # the evaluator's own models stay on the CPU; only the (fake) engine "has" the GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(vllm_backend, "require_vllm", lambda: None)
    suite = tmp_path / "prompts.jsonl"
    suite.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["the cat sat", "explain why sky is blue"]))
    gold = tmp_path / "gold.py"
    gold.write_text("def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    db = tmp_path / "vllm.duckdb"
    args = [
        "eval", str(gpt2_variant_a), str(lora_dir), "--ref", str(gpt2_ref), "--suite", str(suite),
        "--proxy", str(reward_model_dir), "--gold", f"{gold}:score", "--db", str(db), "--samples", "3",
        "--max-new-tokens", "6", "--no-progress", "--no-analysis",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--backend", "vllm"])
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db), read_only=True)
    try:
        (config,) = con.execute("SELECT config FROM generation_configs").fetchone()
        stored = con.execute(
            "SELECT s.sample_id, s.model_fp, s.prompt_token_ids, s.token_ids, s.ended_eos, k.logp_policy, k.k1 "
            "FROM samples s JOIN kl k USING (sample_id) ORDER BY s.sample_id"
        ).fetchall()
    finally:
        con.close()
    config = json.loads(config)
    assert (config["sampler"], config["backend"]) == (vllm_backend.SAMPLER_VERSION, "vllm")
    assert len(stored) == 3 * 2 * 3  # reference, policy, adapter x 2 prompts x 3 samples
    assert any(
        llm.kwargs.get("enable_lora") and llm.kwargs["model"] == str(gpt2_ref.resolve()) for llm in fake_vllm.instances
    )
    assert all(ids[-1] == EOS for _, _, _, ids, eos, _, _ in stored if eos)
    # KL of the policy's samples: the teacher-forced log-prob of the stored tokens (vLLM gave none)
    policy = load_causal_lm(gpt2_variant_a, LoadOptions())
    checked = 0
    for _, _model_fp, prompt_ids, token_ids, _, logp_policy, k1 in stored:
        if logp_policy is None:  # the reference against itself: exactly 0
            assert k1 == 0.0
            continue
        ids = torch.tensor([list(prompt_ids) + list(token_ids)])
        with torch.no_grad():
            logits = policy(ids).logits[0, len(prompt_ids) - 1 : -1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(token_ids)[:, None]).sum().item()
        if abs(expected - logp_policy) < 1e-4 * max(1.0, abs(expected)):
            checked += 1
    assert checked >= 6, checked  # every sample of the full-weights policy
    # the transformers backend on the same database draws its own samples
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT gen_key) FROM samples").fetchone() == (36, 2)
    finally:
        con.close()
