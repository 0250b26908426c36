"""The item collection's shape and identity: its schema (dense CLIP vectors, BM25 over the text,
the scalar fields filters use) and the model it was built for.

The collection records, in its description, which model and dimension its vectors come from, so one
store never mixes two embedding spaces (:func:`check_model`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qbank.config import IndexerSettings, is_milvus_server_uri
from qbank.domain.schema import ID_MAX_LENGTH, SCALAR_FIELDS, TEXT_MAX_BYTES, URI_MAX_LENGTH
from qbank.store.capabilities import Capabilities
from qbank.store.errors import ModelMismatchError, StoreError

# Schema 2 adds full text: a BM25 function turns `text` (analysed by settings.text_analyzer) into
# the sparse vector field below, so one collection answers dense, bm25 and hybrid searches.
# Schema 3 feeds that function `search_text`, the stem in qbank.domain.text's matching form
# (look-alikes folded, letter/digit runs split), written by the store beside the display `text`;
# queries are searched in the same form. Schema 2 collections keep BM25 over the raw text.
SCHEMA_VERSION = 3
SPARSE_FIELD = "text_sparse"
SEARCH_TEXT_FIELD = "search_text"
VECTOR_FIELD = "embedding"

OUTPUT_FIELDS = [
    "question_id",
    "modality",
    "text",
    "image_uri",
    *[f for f in SCALAR_FIELDS if f not in ("question_id", "modality")],
    "metadata",
]


@dataclass
class Identity:
    """What a collection holds, as recorded when it was created (and read back on every connect)."""

    model: str | None
    dim: int
    full_text: bool  # the collection has the BM25 field (schema 2)
    analyzer: str | None
    index_type: str | None  # of the vector field, as Milvus reports it
    search_form: bool = False  # BM25 reads the matching form of the text (schema 3), not the raw text


def read_identity(invoke: Callable[..., Any], collection: str) -> Identity | None:
    """The identity of ``collection``, None when it does not exist yet (``invoke(method, ...)``)."""
    if not invoke("has_collection", collection):
        return None
    info = invoke("describe_collection", collection)
    try:
        recorded = json.loads(info.get("description") or "{}")
    except json.JSONDecodeError:
        recorded = {}
    vector = next(f for f in info["fields"] if f["name"] == VECTOR_FIELD)
    try:
        index_type = invoke("describe_index", collection, VECTOR_FIELD).get("index_type")
    except StoreError:  # an index named otherwise (made outside qbank): reported as unknown
        index_type = None
    return Identity(
        model=recorded.get("model"),
        dim=int(vector["params"]["dim"]),
        full_text=any(f["name"] == SPARSE_FIELD for f in info["fields"]),
        analyzer=recorded.get("text_analyzer"),
        index_type=index_type,
        search_form=any(f["name"] == SEARCH_TEXT_FIELD for f in info["fields"]),
    )


def collection_schema(
    settings: IndexerSettings, model: str, dim: int, capabilities: Capabilities
) -> tuple[Any, Any, Identity]:
    """(schema, index params, identity) of a new item collection for ``model``'s ``dim``-d vectors,
    with the features this Milvus has (``capabilities``): no BM25 field on a Milvus without full
    text, no INVERTED scalar indexes on one without them."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    full_text = capabilities.full_text
    analyzer = settings.text_analyzer if full_text else None
    recorded = {"model": model, "dim": dim, "schema": SCHEMA_VERSION, "text_analyzer": analyzer}
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=json.dumps(recorded))
    schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_LENGTH, is_primary=True)
    for name, length in SCALAR_FIELDS.items():
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
    if full_text:
        schema.add_field(
            SEARCH_TEXT_FIELD,
            DataType.VARCHAR,
            max_length=TEXT_MAX_BYTES,
            enable_analyzer=True,
            analyzer_params={"type": analyzer},
        )
        schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("image_uri", DataType.VARCHAR, max_length=URI_MAX_LENGTH)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
    index = MilvusClient.prepare_index_params()
    index.add_index(VECTOR_FIELD, index_type=settings.vector_index, metric_type=settings.metric_type)
    if full_text:
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=[SEARCH_TEXT_FIELD],
                output_field_names=[SPARSE_FIELD],
            )
        )
        index.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    if is_milvus_server_uri(settings.uri) and capabilities.inverted_index:  # filters on a server; Lite scans
        for name in SCALAR_FIELDS:
            index.add_index(name, index_type="INVERTED")
    return schema, index, Identity(model, dim, full_text, analyzer, settings.vector_index, search_form=full_text)


def check_model(identity: Identity, collection: str, model: str, dim: int) -> None:
    """Refuse vectors of another model or dimension than the collection holds."""
    if dim != identity.dim or (identity.model and model != identity.model):
        raise ModelMismatchError(
            f"collection {collection!r} holds {identity.dim}-d vectors of model {identity.model!r}, "
            f"but got {dim}-d vectors of model {model!r}. Use the same model, or another collection "
            "(QBANK_COLLECTION) for this one."
        )
