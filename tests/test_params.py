"""Request parameters and ids, without a Flow: every declared parameter of every endpoint refuses
every wrong kind of value with a message naming it; ids follow one rule.

The cases are generated from the declarations in qbank.service.params, so a parameter added there is
checked here without a new test.
"""

from __future__ import annotations

import pytest

from qbank.config import Limits
from qbank.domain.schema import ItemError, check_id, id_problem, tags_to_fields
from qbank.service.params import (
    KNOWN_ENDPOINTS,
    ParameterError,
    RequestTooLargeError,
    UnknownEndpointError,
    check_parameters,
    check_request,
    endpoint_parameters,
)

LIMITS = Limits()

# One value of each JSON kind a client can send (and what Struct turns numbers into).
SAMPLES = {
    "string": "12",
    "empty string": "",
    "integer": 12,
    "float": 1.5,
    "whole float": 12.0,
    "negative": -3,
    "huge": 10**12,
    "boolean": True,
    "list of strings": ["a", "b"],
    "list of numbers": [1, 2],
    "mixed list": ["a", 1],
    "empty list": [],
    "object": {"subject": "数学"},
    "nested list": [["a"]],
}

# Which sample kinds each kind of parameter accepts (everything else must be refused).
ACCEPTS = {
    "drop_image_content": {"boolean"},
    "allow_many": {"boolean"},
    "ocr": {"boolean"},
    "page": {"boolean"},
    "figures": {"boolean"},
    "model_name": {"string", "empty string"},
    "access_paths": {"string", "empty string"},
    "traversal_paths": {"string", "empty string"},
    "batch_size": {"integer", "whole float", "huge"} - {"huge"},
    "limit": {"integer", "whole float"},
    "rrf_k": {"integer", "whole float"},
    "neighbours": {"integer", "whole float"},
    "max_items": {"integer", "whole float"},
    "threshold": set(),  # (0, 1]: none of the samples
    "filter": {"object"},
    "modality": set(),
    "mode": set(),
    "group_by": set(),  # only "question_id": none of the samples
    "search_in": set(),  # "stem" or "analysis": none of the samples
    "deadline": {"integer", "float", "whole float", "huge"},  # Unix seconds, 0..1e11
    "by": set(),
    "weights": set(),
    "ids": {"list of strings", "empty list"},
    "question_ids": {"list of strings", "empty list"},
}


def wrong_cases() -> list[tuple[str, str, str]]:
    cases = []
    for endpoint in KNOWN_ENDPOINTS:
        for name in endpoint_parameters(endpoint, LIMITS):
            for kind in SAMPLES:
                if kind not in ACCEPTS[name]:
                    cases.append((endpoint, name, kind))
    return cases


WRONG = wrong_cases()


def test_there_are_many_generated_cases():
    assert len(WRONG) > 300 and {e for e, _, _ in WRONG} == set(KNOWN_ENDPOINTS)


@pytest.mark.parametrize(("endpoint", "name", "kind"), WRONG)
def test_every_wrong_value_is_refused_naming_the_parameter(endpoint, name, kind):
    with pytest.raises(ParameterError, match=f"parameter '{name}'"):
        check_parameters(endpoint, {name: SAMPLES[kind]}, LIMITS)


def test_right_values_pass_and_come_back_typed():
    checked = check_parameters("/search", {"limit": 5.0, "filter": {}, "mode": "hybrid", "weights": "0.7,0.3"}, LIMITS)
    assert checked == {"limit": 5, "filter": {}, "mode": "hybrid", "weights": (0.7, 0.3)}
    assert isinstance(checked["limit"], int)
    assert check_parameters("/delete", {"question_ids": ["12"], "allow_many": False}, LIMITS) == {
        "question_ids": ["12"],
        "allow_many": False,
    }
    assert check_parameters("/near_duplicates", {"threshold": 1, "by": "dense"}, LIMITS)["threshold"] == 1.0
    assert check_parameters("/encode", {"__results__": {"x": 1}, "drop_image_content": False}, LIMITS) == {
        "drop_image_content": False
    }


def test_a_string_where_a_list_belongs_is_refused_not_iterated():
    with pytest.raises(ParameterError, match="parameter 'question_ids' must be a list of strings, got the string '12'"):
        check_parameters("/delete", {"question_ids": "12"}, LIMITS)
    with pytest.raises(ParameterError, match="parameter 'ids' must be a list of strings"):
        check_parameters("/exists", {"ids": "13:text:0"}, LIMITS)


def test_unknown_parameters_and_endpoints_are_refused_naming_the_known_ones():
    with pytest.raises(ParameterError, match="unknown parameter 'limt' for /search; it takes: .*limit"):
        check_parameters("/search", {"limt": 3}, LIMITS)
    for endpoint in ("/Index", "indexx", "/index/", "/delete_all"):
        with pytest.raises(UnknownEndpointError, match="this service serves /encode, /rank, /index"):
            check_parameters(endpoint, {}, LIMITS)
    assert check_parameters("/", {}, LIMITS) == {}
    with pytest.raises(UnknownEndpointError, match="got '/rank/ViT-B-32'"):  # one model per service
        check_parameters("/rank/ViT-B-32", {"model_name": "ViT-B-32"}, LIMITS)


def test_request_size_limits_name_their_setting():
    with pytest.raises(
        RequestTooLargeError, match="1001 documents, over the limit of 1000.*QBANK_MAX_DOCS_PER_REQUEST"
    ):
        check_request("/index", {}, 1001, LIMITS)
    with pytest.raises(RequestTooLargeError, match="300 queries x limit 1000 = 300000.*QBANK_MAX_RESULTS_PER_REQUEST"):
        check_request("/search", {"limit": 1000}, 300, LIMITS)
    with pytest.raises(ParameterError, match="20001 items, over the limit of 10000 .QBANK_MAX_IDS_PER_REQUEST"):
        check_request("/exists", {"ids": ["x"] * 20_001}, 0, LIMITS)
    with pytest.raises(ParameterError, match="QBANK_MAX_LIMIT"):
        check_request("/search", {"limit": 1001}, 1, LIMITS)
    assert check_request("/search", {"limit": 1000}, 10, LIMITS) == {"limit": 1000}
    # the encoder checks only its own names and keeps the rest for the indexer
    assert check_request("/search", {"limit": "x", "mode": "bm25"}, 1, LIMITS, only={"mode"}) == {
        "limit": "x",
        "mode": "bm25",
    }


HOSTILE_IDS = [
    'a"b',
    "a\\b",
    "F\\",
    "\\",
    '\\\\"',
    "x]y",
    "[",
    'q" or id != "',
    'zz"] or id != "zz" or id in ["zz',
    "or",
    "and",
    "题目：∠A=40°",
    "😀",
    "%",
    "_",
    "a%b_",
    "1",
    "x" * 256,
    "题" * 85,  # 255 bytes
    "\u00a0",
    "\u2028",
    "a,b",
    "$meta",
    "a\\nb",
    "\\u0041",
]
REFUSED_IDS = {
    "": "is 0 bytes",
    "x" * 257: "is 257 bytes",
    "题" * 86: "is 258 bytes",
    "a'b": "single quote",
    "zz'] or id != 'zz' or id in ['zz": "single quote",
    "nl\nx": "control character",
    "tab\tx": "control character",
    "nul\x00": "control character",
    "del\x7f": "control character",
}


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_hostile_but_legal_ids_are_accepted(value):
    assert id_problem(value) is None and check_id(value) == value


@pytest.mark.parametrize("value", list(REFUSED_IDS))
def test_ids_that_cannot_round_trip_are_refused_naming_the_rule(value):
    with pytest.raises(ItemError, match=REFUSED_IDS[value]):
        check_id(value, "item id")


def test_tags_have_a_size_limit_and_question_ids_follow_the_id_rule():
    with pytest.raises(ItemError, match="over the limit of 100 .QBANK_MAX_TAG_BYTES"):
        tags_to_fields("x", {"note": "y" * 200}, max_tag_bytes=100)
    with pytest.raises(ItemError, match="question_id .a.b. contains a single quote"):
        tags_to_fields("x", {"question_id": "a'b"})
    scalars, metadata = tags_to_fields("x", {"question_id": "q1", "note": "n"})
    assert scalars == {"question_id": "q1"} and metadata == {"note": "n"}
