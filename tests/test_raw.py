import io

import numpy as np
import pytest

from metaheac.data.build import Vocabulary
from metaheac.data.config import TENCENT_USER_FIELDS
from metaheac.data.errors import InputError, Problems
from metaheac.data.raw import UserFeatureParser, line_blocks, parse_ad_features, parse_label_rows

LISTS = ["interest1", "kw1"]


def parse(text: str, on_error: str = "fail", block_bytes: int = 1 << 20):
    problems = Problems(on_error)
    parser = UserFeatureParser("userFeature.data", ["age", "gender"], LISTS, set(TENCENT_USER_FIELDS), problems)
    chunks = list(parser.chunks(line_blocks(io.BytesIO(text.encode()), block_bytes)))
    return chunks, problems, parser


def test_line_blocks_keep_line_numbers_across_blocks_and_crlf():
    text = "".join(f"uid {i}|age {i % 3 + 1}\r\n" for i in range(1, 200))
    blocks = list(line_blocks(io.BytesIO(text.encode()), block_bytes=64))
    lines = [line for b in blocks for line in b.lines.to_pylist()]
    assert lines == [f"uid {i}|age {i % 3 + 1}" for i in range(1, 200)]
    assert [b.first_line for b in blocks][:2] == [1, 1 + len(blocks[0].lines)]
    assert not any(b.truncated_last for b in blocks)


def test_parse_reads_each_users_raw_ids_with_their_positions():
    chunks, problems, parser = parse("uid 7|age 30|interest1 5 6 7 8|kw1 9\nuid 8|gender 1|interest1 6|age 31\n")
    (chunk,) = chunks
    assert chunk.uid.tolist() == [7, 8] and chunk.line.tolist() == [1, 2]
    # per kept field (age, gender, interest1, kw1): (user row, position in the list, raw id), in file order
    fields = [tuple(part.tolist() for part in field) for field in chunk.fields]
    assert fields == [([0, 1], [0, 0], [30, 31]), ([1], [0], [1]),
                      ([0, 0, 0, 0, 1], [0, 1, 2, 3, 0], [5, 6, 7, 8, 6]), ([0], [0], [9])]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("age 3|gender 1", "line 2: no uid field"),
        ("uid 9|age x3", "line 2: field 'age' has a non-integer id 'x3'"),
        ("uid 9|age ", "line 2: empty field 'age'"),
        ("uid 9|age", "line 2: empty field 'age'"),
        ("uid 9|shoeSize 44", "line 2: unknown field name 'shoeSize'"),
        ("uid 9|age 3|age 4", "line 2: field 'age' appears twice"),
        ("uid 9|age 3 4", "line 2: single-valued field 'age' has 2 values"),
        ("uid 9||age 3", "line 2: malformed field ''"),
    ],
)
def test_malformed_line_names_file_and_line(line, message):
    text = f"uid 1|age 2\n{line}\nuid 3|age 2\n"
    with pytest.raises(InputError, match="userFeature.data " + message):
        parse(text)
    chunks, problems, _ = parse(text, on_error="skip")
    assert [u for c in chunks for u in c.uid.tolist()] == [1, 3]
    assert problems.skipped["malformed_lines"] == 1


def test_truncated_last_line_is_reported():
    text = "uid 1|age 2\nuid 2|interes"
    with pytest.raises(InputError, match=r"line 2: unknown field name 'interes' \(truncated last line\?\)"):
        parse(text)
    with pytest.raises(InputError, match="line 2: last line has no newline"):
        parse("uid 1|age 2\nuid 2|age 3")
    chunks, problems, _ = parse(text, on_error="skip")
    assert [u for c in chunks for u in c.uid.tolist()] == [1]


def test_blank_lines_are_counted_not_fatal():
    chunks, problems, _ = parse("uid 1|age 2\n\n\r\nuid 2|age 2\n")
    assert [u for c in chunks for u in c.uid.tolist()] == [1, 2]
    assert problems.skipped["blank_lines"] == 2


def test_label_rows_header_labels_and_errors():
    text = "aid,uid,label\n1,2,1\n1,3,-1\n\n1,4,0\n"
    (rows,) = parse_label_rows("train.csv", io.BytesIO(text.encode()), True, Problems())
    assert rows.label.tolist() == [1, 0, 0] and rows.line.tolist() == [2, 3, 5]
    with pytest.raises(InputError, match="train.csv line 3: expected 'aid,uid,label'"):
        list(parse_label_rows("train.csv", io.BytesIO(b"aid,uid,label\n1,2,1\n1,x,1\n"), True, Problems()))
    with pytest.raises(InputError, match="train.csv line 1: expected the header"):
        list(parse_label_rows("train.csv", io.BytesIO(b"1,2,1\n"), True, Problems()))


def test_ad_features_missing_column_and_bad_value():
    with pytest.raises(InputError, match="adFeature.csv line 1: missing column"):
        parse_ad_features("adFeature.csv", "aid,advertiserId\n1,2\n", ["advertiserId", "productType"])
    with pytest.raises(InputError, match="adFeature.csv line 3: a non-integer value"):
        parse_ad_features("adFeature.csv", "aid,productType\n1,2\n2,x\n", ["productType"])


def test_vocabulary_is_first_appearance_order():
    vocabulary = Vocabulary()
    assert vocabulary.encode(np.array([50, 7, 50])).tolist() == [1, 2, 1]
    assert vocabulary.encode(np.array([9, 7])).tolist() == [3, 2]
    assert vocabulary.size == 4
