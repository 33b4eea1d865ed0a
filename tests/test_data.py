import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lrgate_cpp.data import (
    Prompt,
    encode_labels,
    load_jsonl,
    load_mgsm,
    load_multijail,
    load_polyrefuse,
    load_split,
    save_jsonl,
)

DATA = Path(os.environ.get("LRGATE_DATA", Path(__file__).parents[1].parent / "shared" / "data"))
POLYREFUSE = DATA / "polyrefuse"
MULTIJAIL = DATA / "multijail" / "calibration.csv"
MGSM = DATA / "mgsm"

needs_data = pytest.mark.skipif(
    not POLYREFUSE.is_dir(), reason=f"real data not found at {DATA}; set LRGATE_DATA"
)


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


# PolyRefuse


@needs_data
def test_polyrefuse_translated_train_matches_file():
    prompts = load_polyrefuse(POLYREFUSE, "de", "harmful", "train")
    records = read_json(POLYREFUSE / "PolyRefuse" / "harmful_train_translated_de.json")
    assert len(prompts) == 260
    assert [p.text for p in prompts] == [r["instruction"] for r in records]
    assert {(p.label, p.lang, p.source, p.split) for p in prompts} == {
        ("harmful", "de", "polyrefuse", "train")
    }


@needs_data
def test_polyrefuse_english_train_reads_splits_folder():
    harmful = load_polyrefuse(POLYREFUSE, "en", "harmful", "train")
    harmless = load_polyrefuse(POLYREFUSE, "en", "harmless", "val")
    splits = POLYREFUSE / "dataset" / "splits"
    expected = read_json(splits / "harmful_train.json")
    assert [p.text for p in harmful] == [r["instruction"] for r in expected]
    assert [p.text for p in harmless] == [
        r["instruction"] for r in read_json(splits / "harmless_val_200_sampled.json")
    ]
    assert len(harmful) == 260
    assert len(harmless) == 200


@needs_data
def test_polyrefuse_test_uses_translated_field():
    prompts = load_polyrefuse(POLYREFUSE, "ja", "harmless", "test")
    records = read_json(POLYREFUSE / "PolyRefuse" / "harmless_test_translated_ja.json")
    assert len(prompts) == 500
    assert [p.text for p in prompts] == [r["instruction_translated"] for r in records]
    assert prompts[0].text != records[0]["instruction"]


@needs_data
def test_polyrefuse_english_test_uses_instruction():
    prompts = load_polyrefuse(POLYREFUSE, "en", "harmful", "test")
    records = read_json(POLYREFUSE / "PolyRefuse" / "harmful_test_translated_en.json")
    assert len(prompts) == 572
    assert [p.text for p in prompts] == [r["instruction"] for r in records]


@needs_data
def test_polyrefuse_missing_zh_harmless_test():
    with pytest.raises(FileNotFoundError) as info:
        load_polyrefuse(POLYREFUSE, "zh", "harmless", "test")
    message = str(info.value)
    assert "harmless_test_translated_zh.json" in message
    assert "ja" in message
    assert "yo" in message


@needs_data
def test_polyrefuse_known_language_without_files():
    with pytest.raises(FileNotFoundError, match="JSONL"):
        load_polyrefuse(POLYREFUSE, "sw", "harmful", "train")


@needs_data
def test_polyrefuse_accepts_data_root():
    prompts = load_polyrefuse(DATA, "yo", "harmful", "val", limit=3)
    assert len(prompts) == 3
    assert prompts[0].lang == "yo"


@needs_data
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("xx", "harmful", "train"), "unknown language code 'xx'"),
        (("de", "toxic", "train"), "invalid label 'toxic'"),
        (("de", "harmful", "dev"), "invalid split 'dev'"),
    ],
)
def test_polyrefuse_rejects_bad_arguments(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_polyrefuse(POLYREFUSE, *args)


@needs_data
def test_load_split_harmful_then_harmless():
    prompts = load_split(POLYREFUSE, "ar", "train")
    labels = [p.label for p in prompts]
    assert labels == ["harmful"] * 260 + ["harmless"] * 200


@needs_data
def test_load_split_limit_per_label():
    prompts = load_split(POLYREFUSE, "ko", "val", limit=4)
    assert [p.label for p in prompts] == ["harmful"] * 4 + ["harmless"] * 4
    assert {p.split for p in prompts} == {"val"}


def write_polyrefuse_file(root, name, records):
    folder = root / "PolyRefuse"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(records), encoding="utf-8")


def test_polyrefuse_record_without_field(tmp_path):
    write_polyrefuse_file(tmp_path, "harmful_train_translated_de.json",
                          [{"instruction": "a"}, {"category": None}])
    with pytest.raises(ValueError, match=r"harmful_train_translated_de.json: record 1 has no"):
        load_polyrefuse(tmp_path, "de", "harmful", "train")


def test_polyrefuse_test_record_without_translation(tmp_path):
    write_polyrefuse_file(tmp_path, "harmful_test_translated_de.json", [{"instruction": "a"}])
    with pytest.raises(ValueError, match="'instruction_translated'"):
        load_polyrefuse(tmp_path, "de", "harmful", "test")


def test_polyrefuse_empty_file(tmp_path):
    write_polyrefuse_file(tmp_path, "harmless_val_translated_fr.json", [])
    with pytest.raises(ValueError, match="contains no records"):
        load_polyrefuse(tmp_path, "fr", "harmless", "val")


def test_polyrefuse_invalid_json(tmp_path):
    folder = tmp_path / "PolyRefuse"
    folder.mkdir()
    (folder / "harmless_val_translated_fr.json").write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_polyrefuse(tmp_path, "fr", "harmless", "val")


def test_polyrefuse_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="no PolyRefuse data"):
        load_polyrefuse(tmp_path, "fr", "harmless", "val")


def test_polyrefuse_rejects_bad_limit(tmp_path):
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_polyrefuse(tmp_path, "fr", "harmless", "val", limit=0)


# MultiJail


@needs_data
def test_multijail_swahili_matches_csv():
    prompts = load_multijail(MULTIJAIL, "sw")
    with open(MULTIJAIL, encoding="utf-8-sig", newline="") as file:
        expected = [row["sw"] for row in csv.DictReader(file)]
    assert len(prompts) == 40
    assert [p.text for p in prompts] == expected
    assert {(p.label, p.lang, p.source) for p in prompts} == {("harmful", "sw", "multijail")}


@needs_data
def test_multijail_limit():
    assert len(load_multijail(MULTIJAIL, "ar", limit=5)) == 5


@needs_data
def test_multijail_language_without_column():
    with pytest.raises(ValueError, match=r"no column 'fa'.*sw"):
        load_multijail(MULTIJAIL, "fa")


def test_multijail_bom_and_multiline_fields(tmp_path):
    path = tmp_path / "mj.csv"
    path.write_bytes('\ufeffid,source,tags,en,sw\n0,x,[],"line one\nline two","swa ""one"""\n'
                     "1,x,[],b,c\n".encode("utf-8"))
    prompts = load_multijail(path, "en")
    assert [p.text for p in prompts] == ["line one\nline two", "b"]
    assert load_multijail(path, "sw")[0].text == 'swa "one"'


def test_multijail_empty_field_names_line(tmp_path):
    path = tmp_path / "mj.csv"
    path.write_text("id,source,tags,sw\n0,x,[],a\n1,x,[],\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3 \(id '1'\) has an empty 'sw' field"):
        load_multijail(path, "sw")


def test_multijail_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="MultiJail file"):
        load_multijail(tmp_path / "none.csv", "sw")


# MGSM


@needs_data
def test_mgsm_swahili_questions():
    prompts = load_mgsm(MGSM, "sw")
    lines = (MGSM / "mgsm_sw.tsv").read_text(encoding="utf-8").splitlines()
    assert len(prompts) == 40
    assert [p.text for p in prompts] == [line.split("\t")[0] for line in lines]
    assert {(p.label, p.lang, p.source) for p in prompts} == {("harmless", "sw", "mgsm")}


@needs_data
def test_mgsm_missing_language_lists_files():
    with pytest.raises(FileNotFoundError, match=r"mgsm_yo.tsv not found.*sw"):
        load_mgsm(MGSM, "yo")


def test_mgsm_bad_line(tmp_path):
    (tmp_path / "mgsm_de.tsv").write_text("q1\t1\nq2 without answer\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 has 1 tab-separated fields"):
        load_mgsm(tmp_path, "de")


# JSONL


def test_jsonl_round_trip(tmp_path):
    prompts = [
        Prompt("Habari?", "harmless", "sw", "mine", "test"),
        Prompt("bad\nrequest", "harmful", "yo", "mine", None),
    ]
    path = tmp_path / "p.jsonl"
    save_jsonl(prompts, path)
    assert load_jsonl(path) == prompts


def test_jsonl_defaults_source_to_file_name(tmp_path):
    path = tmp_path / "extra.jsonl"
    path.write_text('{"text": "t", "label": "harmful", "lang": "am"}\n\n', encoding="utf-8")
    [prompt] = load_jsonl(path)
    assert prompt.source == "extra.jsonl"
    assert prompt.split is None


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "line 2 is not valid JSON"),
        ('["text"]', "line 2 is a JSON list"),
        ('{"text": "t", "lang": "sw"}', "line 2 has no string field 'label'"),
        ('{"text": "t", "label": "bad", "lang": "sw"}', "line 2: invalid label 'bad'"),
        ('{"text": "t", "label": "harmful", "lang": "xx"}', "line 2: unknown language code 'xx'"),
        ('{"text": " ", "label": "harmful", "lang": "sw"}', "line 2: prompt text must be"),
        ('{"text": "t", "label": "harmful", "lang": "sw", "split": 3}', "field 'split'"),
    ],
)
def test_jsonl_bad_line(tmp_path, line, fragment):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "ok", "label": "harmless", "lang": "sw"}\n' + line + "\n",
                    encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_jsonl(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_jsonl_empty_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="contains no prompts"):
        load_jsonl(path)


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.jsonl"):
        load_jsonl(tmp_path / "none.jsonl")


def test_prompt_rejects_bad_label():
    with pytest.raises(ValueError, match="invalid label 'Harmful'"):
        Prompt("x", "Harmful", "en", "s")


def test_encode_labels_values():
    prompts = [Prompt("a", "harmful", "en", "s"), Prompt("b", "harmless", "en", "s")]
    labels = encode_labels(prompts)
    assert labels.dtype == np.int8
    assert labels.tolist() == [1, 0]
