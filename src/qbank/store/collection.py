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
# Schema 4 builds that form on the stem's reading form (qbank.domain.reading: LaTeX and HTML read as
# text); a schema 3 collection keeps the folded raw text, for its stored rows and its queries alike.
# Schema 5 joins the reading form's script markers to what they mark (x^2 -> x2, log_2a -> log2a):
# a typed or photographed log2a met BM25 tokens log / 2 / a and missed (bench/realbank.py); each
# earlier collection keeps the form it was built with. Schema 5 also adds BM25 over each question's
# analysis (worked solution), in fields of its own, searched only when a request asks (search_in).
SCHEMA_VERSION = 5
SPARSE_FIELD = "text_sparse"
SEARCH_TEXT_FIELD = "search_text"
ANALYSIS_TEXT_FIELD = "analysis_search_text"
ANALYSIS_SPARSE_FIELD = "analysis_sparse"
VECTOR_FIELD = "embedding"

# The vector index's parameters where the settings (index_params, search_params) name none, from
# bench/server.py on 1M clustered 512-d vectors on the 2.3.5 standalone, 2 cores (docs/
# performance.md): HNSW at ef 32 gave recall@10 0.986 at 340 single-query QPS (ef 64: 1.000 at 282);
# IVF_FLAT at nprobe 8 1.000 at 357 and IVF_SQ8 0.970 at 339 with 2.5x less memory, but IVF's
# recall there comes from lists that line up with the mixture's centres; HNSW does not depend on it.
# Types not listed get Milvus' own defaults.
DEFAULT_INDEX_PARAMS: dict[str, dict[str, int]] = {
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 1024},
    "IVF_SQ8": {"nlist": 1024},
}
DEFAULT_SEARCH_PARAMS: dict[str, dict[str, int]] = {
    "HNSW": {"ef": 32},
    "IVF_FLAT": {"nprobe": 8},
    "IVF_SQ8": {"nprobe": 8},
}
# Search parameters Milvus refuses below the number of results asked for ("ef(64) should be larger
# than k(100)"): raised to the limit of each search.
AT_LEAST_THE_LIMIT = {"HNSW": "ef", "DISKANN": "search_list"}


def vector_index_type(settings: IndexerSettings, capabilities: Capabilities) -> str:
    """The index type a new collection gets: the setting, else FLAT on Milvus Lite's engine (a file,
    or Lite's server binary by URI: it builds no HNSW, and its other indexes gave recall 0.10), HNSW
    on a Milvus server."""
    if settings.index_type:
        return settings.index_type
    return "FLAT" if capabilities.lite else settings.vector_index


def vector_build_params(settings: IndexerSettings, index_type: str) -> dict[str, Any]:
    """Build parameters of a new collection's vector index: the setting, else the type's defaults."""
    return settings.index_build_params or dict(DEFAULT_INDEX_PARAMS.get(index_type, {}))


def vector_search_params(settings: IndexerSettings, index_type: str | None, limit: int) -> dict[str, Any]:
    """Search parameters of one dense search returning ``limit`` results over an index of
    ``index_type`` (the collection's own, as Milvus reports it)."""
    params = settings.index_search_params or dict(DEFAULT_SEARCH_PARAMS.get(index_type or "", {}))
    floor = AT_LEAST_THE_LIMIT.get(index_type or "")
    if floor and floor in params and isinstance(params[floor], int):
        params[floor] = max(params[floor], limit)
    return {"metric_type": settings.metric_type, "params": params}


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
    schema: int = SCHEMA_VERSION  # as recorded at creation (collections before schema 3 recorded none)
    analysis: bool = False  # the analysis has a BM25 field of its own (schema 5)


def read_identity(invoke: Callable[..., Any], collection: str) -> Identity | None:
    """The identity of ``collection``, None when it does not exist yet (``invoke(MilvusClient.x, ...)``)."""
    from pymilvus import MilvusClient

    if not invoke(MilvusClient.has_collection, collection):
        return None
    info = invoke(MilvusClient.describe_collection, collection)
    try:
        recorded = json.loads(info.get("description") or "{}")
    except json.JSONDecodeError:
        recorded = {}
    vector = next(f for f in info["fields"] if f["name"] == VECTOR_FIELD)
    try:
        index_type = invoke(MilvusClient.describe_index, collection, VECTOR_FIELD).get("index_type")
    except StoreError:  # an index named otherwise (made outside qbank): reported as unknown
        index_type = None
    return Identity(
        model=recorded.get("model"),
        dim=int(vector["params"]["dim"]),
        full_text=any(f["name"] == SPARSE_FIELD for f in info["fields"]),
        analyzer=recorded.get("text_analyzer"),
        index_type=index_type,
        search_form=any(f["name"] == SEARCH_TEXT_FIELD for f in info["fields"]),
        schema=int(recorded.get("schema") or 1),
        analysis=any(f["name"] == ANALYSIS_SPARSE_FIELD for f in info["fields"]),
    )


def collection_schema(
    settings: IndexerSettings, model: str, dim: int, capabilities: Capabilities
) -> tuple[Any, Any, Identity]:
    """(schema, index params, identity) of a new item collection for ``model``'s ``dim``-d vectors,
    with the features this Milvus has (``capabilities``): no BM25 field on a Milvus without full
    text, no INVERTED scalar indexes on one without them."""
    from pymilvus import DataType, MilvusClient

    full_text = capabilities.full_text
    analyzer = settings.text_analyzer if full_text else None
    recorded = {"model": model, "dim": dim, "schema": SCHEMA_VERSION, "text_analyzer": analyzer}
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=json.dumps(recorded))
    schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_LENGTH, is_primary=True)
    for name, length in SCALAR_FIELDS.items():
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
    index = MilvusClient.prepare_index_params()
    if full_text:  # the stems (with their options), and the analyses, searched only when asked
        add_bm25(schema, index, SEARCH_TEXT_FIELD, SPARSE_FIELD, "text_bm25", analyzer)
        add_bm25(schema, index, ANALYSIS_TEXT_FIELD, ANALYSIS_SPARSE_FIELD, "analysis_bm25", analyzer)
    schema.add_field("image_uri", DataType.VARCHAR, max_length=URI_MAX_LENGTH)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
    index_type = vector_index_type(settings, capabilities)
    index.add_index(
        VECTOR_FIELD,
        index_type=index_type,
        metric_type=settings.metric_type,
        params=vector_build_params(settings, index_type),
    )
    if is_milvus_server_uri(settings.uri) and capabilities.inverted_index:  # filters on a server; Lite scans
        for name in SCALAR_FIELDS:
            index.add_index(name, index_type="INVERTED")
    return (
        schema,
        index,
        Identity(model, dim, full_text, analyzer, index_type, search_form=full_text, analysis=full_text),
    )


def add_bm25(schema: Any, index: Any, text_field: str, sparse_field: str, function: str, analyzer: str) -> None:
    """A text field analysed by ``analyzer``, the sparse field Milvus' BM25 ``function`` writes from
    it, and that field's index."""
    from pymilvus import DataType, Function, FunctionType

    schema.add_field(
        text_field,
        DataType.VARCHAR,
        max_length=TEXT_MAX_BYTES,
        enable_analyzer=True,
        analyzer_params={"type": analyzer},
    )
    schema.add_field(sparse_field, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name=function,
            function_type=FunctionType.BM25,
            input_field_names=[text_field],
            output_field_names=[sparse_field],
        )
    )
    index.add_index(sparse_field, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")


def check_model(identity: Identity, collection: str, model: str, dim: int) -> None:
    """Refuse vectors of another model or dimension than the collection holds."""
    if dim != identity.dim or (identity.model and model != identity.model):
        raise ModelMismatchError(
            f"collection {collection!r} holds {identity.dim}-d vectors of model {identity.model!r}, "
            f"but got {dim}-d vectors of model {model!r}. Use the same model, or another collection "
            "(QBANK_COLLECTION) for this one."
        )
