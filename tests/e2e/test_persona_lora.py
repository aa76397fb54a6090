"""The persona LoRA for real, on the CPU: SFT and DPO steps on the bundled SmolLM2, the
adapter reloaded, exported to a GGUF LoRA that llama.cpp serves with the same greedy
output as peft, merged into a new GGUF, and the `tomo persona` commands end to end.

A few steps at a high learning rate on four examples make the adapter's change plain
(the model learns a nonsense phrase), so the comparisons do not depend on the small
model being clever.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from brain.errors import ConfigError, ModelError
from brain.llm.llamacpp import bundled_model_path
from brain.persona.gguf_lora import (
    export_gguf_lora,
    merge_into_gguf,
    read_gguf_lora,
    read_peft_adapter,
)
from brain.persona.train import TrainConfig, base_checkpoint, read_losses, train

pytestmark = pytest.mark.model

SYSTEM = {"role": "system", "content": "You are Tomo."}
QUESTIONS = ["Hi, who are you?", "How are you?", "What's up?", "Tell me a joke."]
PHRASE = "Pineapple turtles! Tomo loves pineapple turtles."
OTHER = "Mango otters! Tomo adores mango otters."
PROMPT = [SYSTEM, {"role": "user", "content": "Hi, who are you?"}]
TOKENS = 12


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


def sft_rows(reply: str = PHRASE) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": q},
                {"role": "assistant", "content": reply},
            ],
            "source": "card",
        }
        for q in QUESTIONS
    ]


def dpo_rows() -> list[dict[str, Any]]:
    return [
        {
            "prompt": [SYSTEM, {"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": OTHER}],
            "rejected": [{"role": "assistant", "content": PHRASE}],
            "reasons": "the chosen one names otters",
            "judge": "test",
            "person_id": None,
            "source": "card",
        }
        for q in QUESTIONS
    ]


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF as a transformers checkpoint, converted once for the session."""
    return base_checkpoint(bundled_model_path(), tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="session")
def sft_run(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sft")
    data = write_jsonl(root / "sft.jsonl", sft_rows())
    config = TrainConfig(
        stage="sft",
        data=data,
        run_dir=root / "run",
        base_dir=base_dir,
        max_steps=6,
        learning_rate=3e-3,
        save_steps=3,
        threads=2,
        progress_bar=False,
    )
    result = train(config)
    assert result.steps == 6
    return root / "run"


def peft_greedy(base_dir: Path, adapter: Path | None) -> str:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt")[
        "input_ids"
    ]
    out = model.generate(input_ids=ids, max_new_tokens=TOKENS, do_sample=False)
    return str(tokenizer.decode(out[0][ids.shape[1] :], skip_special_tokens=True)).strip()


def llama_greedy(model_path: Path, lora_path: Path | None = None) -> str:
    from llama_cpp import Llama

    llama = Llama(
        model_path=str(model_path),
        lora_path=str(lora_path) if lora_path else None,
        n_ctx=256,
        n_threads=2,
        verbose=False,
    )
    try:
        result = llama.create_chat_completion(
            messages=PROMPT,  # type: ignore[arg-type]
            max_tokens=TOKENS,
            temperature=0.0,
        )
        return str(result["choices"][0]["message"]["content"]).strip()  # type: ignore[index]
    finally:
        llama.close()


def lora_b_norm(adapter: Path) -> float:
    from safetensors.numpy import load_file

    state = load_file(str(adapter / "adapter_model.safetensors"))
    return float(sum(np.abs(v).sum() for k, v in state.items() if "lora_B" in k))


def test_sft_steps_change_the_adapter_and_the_generation(sft_run: Path, base_dir: Path) -> None:
    adapter = sft_run / "adapter"
    # peft starts lora_B at zero: a non-zero B means the steps trained it.
    assert lora_b_norm(adapter) > 0
    base_text = peft_greedy(base_dir, None)
    tuned_text = peft_greedy(base_dir, adapter)
    assert tuned_text != base_text
    assert "turtle" in tuned_text.lower()
    # the saved adapter reloads and gives the same text again
    assert peft_greedy(base_dir, adapter) == tuned_text
    losses = read_losses(sft_run / "loss.jsonl")
    assert [p["step"] for p in losses] == [1, 2, 3, 4, 5, 6]
    assert losses[-1]["loss"] < losses[0]["loss"]
    assert (sft_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((sft_run / "summary.json").read_text())
    assert summary["steps"] == 6
    assert summary["seconds_per_step"] > 0
    assert summary["peak_rss_mb"] > 100


def test_a_run_resumes_from_its_newest_checkpoint(base_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    config = TrainConfig(
        stage="sft",
        data=data,
        run_dir=tmp_path / "run",
        base_dir=base_dir,
        max_steps=2,
        save_steps=1,
        threads=2,
        progress_bar=False,
    )
    first = train(config)
    assert first.resumed_from is None
    config.max_steps = 3
    second = train(config)
    assert second.resumed_from == "checkpoint-2"
    assert second.steps == 3
    assert [p["step"] for p in read_losses(tmp_path / "run" / "loss.jsonl")] == [1, 2, 3]


def test_dpo_steps_from_the_sft_adapter_move_towards_the_chosen(
    sft_run: Path, base_dir: Path, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "dpo.jsonl", dpo_rows())
    sft_adapter = sft_run / "adapter"
    result = train(
        TrainConfig(
            stage="dpo",
            data=data,
            run_dir=tmp_path / "run",
            base_dir=base_dir,
            init_adapter=sft_adapter,
            max_steps=4,
            learning_rate=2e-3,
            threads=2,
            progress_bar=False,
        )
    )
    assert result.steps == 4
    before = read_peft_adapter(sft_adapter, n_head=9, n_head_kv=3)
    after = read_peft_adapter(result.adapter_dir, n_head=9, n_head_kv=3)
    changed = [
        name
        for name, (a, b) in after.pairs.items()
        if not (
            np.array_equal(a, before.pairs[name][0]) and np.array_equal(b, before.pairs[name][1])
        )
    ]
    assert len(changed) == len(after.pairs)
    losses = read_losses(tmp_path / "run" / "loss.jsonl")
    assert len(losses) == 4
    assert all(p["stage"] == "dpo" for p in losses)
    # the reference is the SFT model, so the first step's loss is log(2)
    assert losses[0]["loss"] == pytest.approx(np.log(2), abs=1e-3)
    assert losses[-1]["rewards/margins"] > 0
    # and the generation moved from the rejected reply to the chosen one
    assert "turtle" in peft_greedy(base_dir, sft_adapter).lower()
    assert "otter" in peft_greedy(base_dir, result.adapter_dir).lower()


@pytest.fixture(scope="module")
def exported(sft_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "persona.gguf"
    export_gguf_lora(sft_run / "adapter", out, base_gguf=bundled_model_path())
    return out


def test_the_gguf_lora_gives_llama_cpp_the_same_greedy_output_as_peft(
    exported: Path, sft_run: Path, base_dir: Path
) -> None:
    lora = read_gguf_lora(exported)
    assert lora.rank == 8
    assert lora.alpha == 16
    assert len(lora.pairs) == 30 * 7
    served = llama_greedy(bundled_model_path(), exported)
    assert served == peft_greedy(base_dir, sft_run / "adapter")
    assert served != llama_greedy(bundled_model_path())


def test_merged_and_quantized_model_answers_like_base_plus_lora(
    exported: Path, tmp_path: Path
) -> None:
    merged = tmp_path / "merged.gguf"
    seen: list[tuple[int, int]] = []
    changed = merge_into_gguf(
        bundled_model_path(),
        exported,
        merged,
        qtype="Q8_0",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert changed == 30 * 7
    assert seen[-1][0] == seen[-1][1]
    assert llama_greedy(merged) == llama_greedy(bundled_model_path(), exported)
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_adapters_and_types_give_clear_errors(
    sft_run: Path, exported: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(sft_run / "adapter", corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="corrupt"):
        export_gguf_lora(corrupt, tmp_path / "x.gguf", base_gguf=bundled_model_path())
    assert not (tmp_path / "x.gguf").exists()

    # an adapter trained on another model: same names, other shapes
    from safetensors.numpy import load_file, save_file

    other = tmp_path / "other"
    shutil.copytree(sft_run / "adapter", other)
    state = load_file(str(other / "adapter_model.safetensors"))
    wider = {
        k: (np.zeros((v.shape[0], 2048), np.float32) if "lora_A" in k else v)
        for k, v in state.items()
    }
    save_file(wider, str(other / "adapter_model.safetensors"))
    with pytest.raises(ModelError, match="does not fit the base model"):
        export_gguf_lora(other, tmp_path / "y.gguf", base_gguf=bundled_model_path())

    with pytest.raises(ModelError, match="not a peft adapter folder"):
        export_gguf_lora(tmp_path, tmp_path / "z.gguf", base_gguf=bundled_model_path())
    with pytest.raises(ModelError, match="Unknown tensor type"):
        merge_into_gguf(bundled_model_path(), exported, tmp_path / "m.gguf", qtype="Q3_X")
    with pytest.raises(ModelError, match="not a GGUF LoRA"):
        merge_into_gguf(bundled_model_path(), bundled_model_path(), tmp_path / "m.gguf")


def test_training_data_errors_are_clear(base_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = TrainConfig(stage="sft", data=empty, run_dir=tmp_path / "r", base_dir=base_dir)
    with pytest.raises(ConfigError, match="has no records"):
        train(config)
    config = TrainConfig(stage="sft", data=empty, run_dir=tmp_path / "r", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a transformers checkpoint"):
        train(config)


@pytest.fixture
def data_dir(tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir whose converted base is the session's (no second conversion)."""
    root = tmp_path / "data"
    (root / "persona" / "base").mkdir(parents=True)
    (root / "persona" / "base" / base_dir.name).symlink_to(base_dir)
    monkeypatch.setenv("TOMO_DATA_DIR", str(root))
    monkeypatch.delenv("TOMO_LLM__MODEL_PATH", raising=False)
    return root


def test_the_commands_train_sft_then_dpo_and_export(data_dir: Path) -> None:
    from bots.cli import app

    write_jsonl(data_dir / "persona" / "data" / "sft.jsonl", sft_rows())
    write_jsonl(data_dir / "persona" / "data" / "dpo.jsonl", dpo_rows())
    runner = CliRunner()
    sft = runner.invoke(app, ["persona", "train", "--max-steps", "1", "--threads", "2"])
    assert sft.exit_code == 0, sft.output
    assert "seconds a step (median)" in sft.output
    assert (data_dir / "persona" / "runs" / "persona-sft" / "adapter").is_dir()
    dpo = runner.invoke(
        app, ["persona", "train", "--stage", "dpo", "--max-steps", "1", "--threads", "2"]
    )
    assert dpo.exit_code == 0, dpo.output
    exported = runner.invoke(app, ["persona", "export"])
    assert exported.exit_code == 0, exported.output
    out = data_dir / "adapters" / "persona.gguf"
    assert f"TOMO_LLM__LORA_PATH={out}" in exported.output
    # the newest stage wins: the DPO adapter was exported
    dpo_lora = read_peft_adapter(
        data_dir / "persona" / "runs" / "persona-dpo" / "adapter", n_head=9, n_head_kv=3
    )
    served = read_gguf_lora(out)
    name = "blk.0.attn_v.weight"
    assert np.array_equal(served.pairs[name][1], dpo_lora.pairs[name][1])

    bad = runner.invoke(app, ["persona", "train", "--stage", "ppo"])
    assert bad.exit_code != 0
    missing = runner.invoke(app, ["persona", "train", "--person", "7"])
    assert missing.exit_code != 0
