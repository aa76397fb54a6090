"""`tomo bench locomo` plumbing on a tiny LoCoMo-format conversation made here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bots.bench_locomo import load_locomo, parse_session_date, run_locomo, write_results
from brain.errors import InputError
from brain.memory.embed import HashEmbedder

SCORER = Path(__file__).resolve().parents[3] / "shared" / "bench" / "locomo_score.py"


def tiny() -> list[dict[str, Any]]:
    return [
        {
            "sample_id": "t-1",
            "conversation": {
                "speaker_a": "Ann",
                "speaker_b": "Ben",
                "session_1_date_time": "1:56 pm on 8 May, 2023",
                "session_1": [
                    {"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a puppy named Rex."},
                    {"speaker": "Ben", "dia_id": "D1:2", "text": "Lovely! What breed?"},
                ],
                "session_2_date_time": "10:00 am on 9 June, 2023",
                "session_2": [
                    {
                        "speaker": "Ben",
                        "dia_id": "D2:1",
                        "text": "I ran a marathon in Berlin.",
                        "blip_caption": "a man at a finish line",
                    },
                    {"speaker": "Ann", "dia_id": "D2:2", "text": "Congratulations!"},
                ],
            },
            "qa": [
                {"question": "What is Ann's puppy called?", "evidence": ["D1:1"], "category": 4},
                {"question": "Where did Ben run a marathon?", "evidence": ["D2:1"], "category": 4},
            ],
        }
    ]


def test_retrievals_cite_dia_ids_and_score(tmp_path: Path) -> None:
    rows, summary = asyncio.run(run_locomo(tiny(), consolidate=False, embedder=HashEmbedder()))
    write_results(tmp_path, rows, summary)
    lines = [json.loads(x) for x in (tmp_path / "retrievals.jsonl").read_text().splitlines()]
    assert [(r["sample_id"], r["qa_index"]) for r in lines] == [("t-1", 0), ("t-1", 1)]
    for row in lines:
        assert len(row["items"]) == 4  # every turn, ranked (at most 50)
        assert all(len(item["source_ids"]) == 1 for item in row["items"])
    assert lines[0]["items"][0]["source_ids"] == ["D1:1"]
    assert lines[0]["items"][0]["text"] == "[8 May 2023] Ann: I adopted a puppy named Rex."
    assert lines[1]["items"][0]["source_ids"] == ["D2:1"]
    assert "[shares a photo: a man at a finish line]" in lines[1]["items"][0]["text"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["turns"] == 4
    assert saved["questions"] == 2
    assert saved["query_ms_p99"] >= saved["query_ms_p50"] > 0
    if SCORER.exists():  # shared/ sits beside the checkout in CI and in development
        data = tmp_path / "tiny.json"
        data.write_text(json.dumps(tiny()))
        out = subprocess.run(
            [
                sys.executable,
                str(SCORER),
                "--data",
                str(data),
                "--retrievals",
                str(tmp_path / "retrievals.jsonl"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "overall R@10=100.0 rt@10=100.0" in out


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "x.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="Cannot read the LoCoMo file"):
        load_locomo(broken)
    broken.write_text('{"a": 1}')
    with pytest.raises(InputError, match="not a LoCoMo file"):
        load_locomo(broken)
    with pytest.raises(InputError, match="Unreadable LoCoMo session date"):
        parse_session_date("yesterday")
