"""One place that reads configuration: flow.yml ``with:`` values, overridden by environment variables.

Precedence is environment > ``with:`` > default, so an operator can change a deployed flow.yml
without editing it (12-factor style), and a laptop run needs neither.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseSettings, ValidationError, validator
from pydantic.fields import ModelField

from qbank.domain.fusion import SEARCH_MODES, parse_weights
from qbank.domain.schema import (
    MAX_DOCS_PER_REQUEST,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_TAG_BYTES,
    MAX_TEXT_CHARS,
    default_request_bytes,
)

DEFAULT_MODEL = "OFA-Sys/chinese-clip-vit-base-patch16"

ONNX_PRECISIONS = ("fp32", "fp16", "int8")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE set the way huggingface_hub reads it: never reach for the hub. (Read live:
    huggingface_hub's own constant is fixed when it is first imported.)"""
    return os.environ.get("HF_HUB_OFFLINE", "") in {"1", "true", "True"}


def is_milvus_server_uri(uri: str) -> bool:
    """A Milvus server (many clients may connect) rather than a Milvus Lite file (one process)."""
    return uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


def check_flow_topology(env: dict[str, str]) -> None:
    """Refuse ports that cannot be listened on (the gateway's and the metrics') and replica counts the
    store cannot serve, before any process starts."""
    ports: dict[int, str] = {}
    for name in (n for n in FLOW_ENV_DEFAULTS if n.endswith("_PORT")):
        raw = env.get(name, FLOW_ENV_DEFAULTS[name])
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise ConfigError(f"{name} must be a port number from 1 to 65535, got {raw!r}")
        if int(raw) in ports:
            raise ConfigError(f"{name} and {ports[int(raw)]} are both {raw}: each part needs a port of its own")
        ports[int(raw)] = name
    for name in ("QBANK_OCR_REPLICAS", "QBANK_ENCODER_REPLICAS", "QBANK_INDEXER_REPLICAS"):
        raw = env.get(name, "1")
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"{name} must be a whole number >= 1, got {raw!r}")
    uri = env.get("QBANK_MILVUS_URI", "")
    if int(env.get("QBANK_INDEXER_REPLICAS", "1")) > 1 and not is_milvus_server_uri(uri):
        raise ConfigError(
            f"QBANK_INDEXER_REPLICAS={env['QBANK_INDEXER_REPLICAS']} needs a Milvus server: Milvus Lite "
            f"({uri or 'the default file under QBANK_DATA_DIR'}) holds one process per file. Set "
            "QBANK_MILVUS_URI=http://host:19530 or keep one indexer replica."
        )


TEXT_ANALYZERS = ("chinese", "standard", "english")
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
LITE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "AUTOINDEX")  # Milvus Lite 2.5.1: "local mode only support ..."


@dataclass(frozen=True)
class Limits:
    """The request-size limits (from the executors' settings; docs/data-contract.md)."""

    max_limit: int = 1000  # QBANK_MAX_LIMIT: matches per query
    max_ids: int = 10_000  # QBANK_MAX_IDS_PER_REQUEST: ids / question_ids in one parameter
    max_docs: int = 1000  # QBANK_MAX_DOCS_PER_REQUEST: Documents in one request
    max_results: int = 10_000  # QBANK_MAX_RESULTS_PER_REQUEST: queries x limit of one search
    default_limit: int = 10  # QBANK_DEFAULT_LIMIT: matches per query when a search names none


class ConfigError(ValueError):
    """A setting has a value the service cannot use; the message names the setting."""


class QbankSettings(BaseSettings):
    """Base: each field may be set by ``with:`` (keyword arguments) and overridden by ``QBANK_<FIELD>``.

    pydantic's ``BaseSettings`` reads the variables and converts the types; the only changes to its
    defaults are the order (environment > ``with:`` > default, so an operator overrides a deployed
    flow.yml without editing it) and that an empty variable counts as unset (a ConfigMap or a shell
    writes ``QBANK_X=`` for "not set").
    """

    class Config:
        env_prefix = "QBANK_"
        extra = "forbid"

        @classmethod
        def customise_sources(cls, init_settings, env_settings, file_secret_settings):
            def environment(settings: BaseSettings) -> dict[str, Any]:
                return {k: v for k, v in env_settings(settings).items() if v != ""}

            return environment, init_settings

    @validator("*", pre=True)
    def _whole_numbers(cls, value: Any, field: ModelField) -> Any:
        """pydantic v1 truncates 2.5 to 2 for an int field: refuse instead (2.0 is fine)."""
        if field.type_ is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"must be a whole number, got {value!r}")
        return value

    @classmethod
    def take_from(cls, executor_kwargs: dict[str, Any]):
        """Resolve from an executor's kwargs, removing the setting fields (``with:`` values) from them,
        so the rest (metas, requests, runtime_args) can go to ``Executor.__init__``."""
        given = {k: executor_kwargs.pop(k) for k in list(executor_kwargs) if k in cls.__fields__}
        return cls.resolve(**{k: v for k, v in given.items() if v is not None})

    @classmethod
    def executor_signature(cls) -> inspect.Signature:
        """The signature of an executor ``__init__(self, **kwargs)`` that takes these settings, so that
        what inspects it (jina's check of ``with:`` keys, ``help()``) sees every setting by name."""
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        params += [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=f"{f.type_.__name__} | None"
            )
            for name, f in cls.__fields__.items()
        ]
        params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
        return inspect.Signature(params)

    @classmethod
    def env_names(cls) -> set[str]:
        """The environment variables these settings read."""
        return {f"QBANK_{name.upper()}" for name in cls.__fields__}

    @classmethod
    def from_environment(cls) -> set[str]:
        """The names of the settings the environment sets now (non-empty ``QBANK_<NAME>``)."""
        return {name for name in cls.__fields__ if os.environ.get(f"QBANK_{name.upper()}", "") != ""}

    @classmethod
    def resolve(cls, **with_values: Any):
        """The settings from ``with_values`` and the environment, checked; ConfigError names what is wrong."""
        unknown = set(with_values) - set(cls.__fields__)
        if unknown:
            raise ConfigError(f"unknown settings for {cls.__name__}: {sorted(unknown)}")
        try:
            settings = cls(**with_values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                name = str(error["loc"][0])
                env = f"QBANK_{name.upper()}"
                source = f"{env}={os.environ[env]!r}" if os.environ.get(env) else f"with: {with_values.get(name)!r}"
                problems.append(f"setting {name!r} ({source}): {error['msg']}")
            raise ConfigError("; ".join(problems)) from None
        settings.check()
        return settings

    def check(self) -> None:
        """Rules between values and ranges (each subclass); raises ConfigError naming the setting."""


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"setting {name!r} must be one of {allowed}, got {value!r}")


def _positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise ConfigError(f"setting {name!r} must be > 0, got {value!r}")


def _at_most(name: str, value: int | float, limit: int | float, why: str) -> None:
    if value > limit:
        raise ConfigError(f"setting {name!r} must be at most {limit} ({why}), got {value!r}")


def _json_params(name: str, raw: str) -> dict[str, int | float | str]:
    """A parameters setting: a JSON object of names to numbers or strings ("" -> {})."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"setting {name!r} must be a JSON object such as '{{\"ef\": 64}}', got {raw!r} ({exc})"
        ) from None
    if not isinstance(value, dict) or not all(
        isinstance(v, int | float | str) and not isinstance(v, bool) for v in value.values()
    ):
        raise ConfigError(f"setting {name!r} must be a JSON object of names to numbers or strings, got {raw!r}")
    return value


class ImageInputSettings(QbankSettings):
    """How an executor that reads images takes them: the same limits and fetch policy (the same
    QBANK_* variables) for the encoder and the OCR reader."""

    device: str = "auto"  # auto | cpu | cuda
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    fetch_timeout: float = 10.0  # seconds for one server-side fetch of an image URI, redirects included
    uri_roots: str = ""  # folders the server may read image paths from (os.pathsep or comma separated)
    fetch_private: bool = False  # let image URLs reach loopback/private/link-local addresses
    max_docs_per_request: int = MAX_DOCS_PER_REQUEST  # Documents in one request (the indexer has the same setting)

    def check(self) -> None:
        super().check()
        _positive("max_docs_per_request", self.max_docs_per_request)
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _positive("max_image_bytes", self.max_image_bytes)
        _positive("max_image_pixels", self.max_image_pixels)
        _positive("fetch_timeout", self.fetch_timeout)


class SearchDefaults(QbankSettings):
    """What a search does when its request does not say: read by the encoder (which queries to
    embed) and by the indexer (how to search), from the same QBANK_SEARCH_MODE."""

    search_mode: str = "dense"  # dense | bm25 | hybrid, when a request names none

    def check(self) -> None:
        super().check()
        _choice("search_mode", self.search_mode, SEARCH_MODES)


class EncoderSettings(ImageInputSettings, SearchDefaults):
    """CLIP encoder: which model, which engine, on which device, in what batches."""

    model: str = DEFAULT_MODEL
    engine: str = "torch"  # torch | onnx
    onnx_path: str = ""  # folder with textual.onnx + visual.onnx (clip-server layout)
    # Weights of the ONNX export qbank-fetch-model makes into onnx_path; the encoder runs whatever
    # the folder holds (its qbank_onnx.json says which).
    onnx_precision: str = "fp32"  # fp32 | fp16 | int8
    minibatch_size: int = 32
    # Longer texts are refused (a stem is never that long; the model reads 52-77 tokens).
    max_text_chars: int = MAX_TEXT_CHARS
    num_threads: int = 0  # 0: library default
    fp16: str = "auto"  # auto (on when cuda) | true | false
    drop_image_content: bool = True

    def check(self) -> None:
        super().check()
        _choice("engine", self.engine, ("torch", "onnx"))
        _choice("fp16", self.fp16, ("auto", "true", "false"))
        _choice("onnx_precision", self.onnx_precision, ONNX_PRECISIONS)
        _positive("minibatch_size", self.minibatch_size)
        _positive("max_text_chars", self.max_text_chars)
        if not self.model and not self.onnx_path:
            raise ConfigError("setting 'model' is empty: give a hub id, a local folder or a clip-server name")


# Photos are read at most this long on their longest side: rapidocr brings every image to it before
# detection and recognition anyway (its Global.max_side_len), so reading is unchanged; decoding to
# it (a JPEG at a DCT scale) keeps a 40-megapixel photo from ever existing at full size in memory.
OCR_MAX_SIDE = 2000


class OcrSettings(ImageInputSettings):
    """The OCR reader (PP-OCRv6 in the rapidocr wheel): how large it reads a photo, with which threads.

    Detector side with limit type "max" (the longest side is brought to at most that): at 960,
    0.11 CPU-s per rendered question image on 1 thread and 530 MB, against 0.76 CPU-s and ~1 GB for
    rapidocr's default (shortest side up to 736, which upscales small photos), same accuracy
    (../shared/README.md); 736 then took half the detector's time on typeset CMMLU pages (56 against
    110 ms) and read them as well (docs/photo-search.md). The direction classifier is off: it cost
    time and gained nothing there."""

    ocr_det_side: int = 736
    ocr_use_cls: bool = False
    ocr_min_score: float = 0.5  # lines read with less confidence are left out
    ocr_threads: int = 0  # 0: the engine's default
    # The CPU engine: "onnxruntime", or "openvino" (the `openvino` extra): the same text read, 0.69-0.92x
    # the time alone (bench/ocr.py --rounds 1) but 1.04-1.07x through the Flow (bench/reader_flow.py)
    # on 2 cores; CUDA always runs on onnxruntime (onnxruntime-gpu).
    ocr_engine: str = "onnxruntime"
    ocr_rec_batch: int = 1  # text lines per recognition call (rapidocr pads a batch to its widest line)
    # Each line is recognised 48 px high and padded to at least this many px wide (rapidocr: 320; a
    # page's option lines are 40-140 px: 96 took 0.74x the recognition time on typeset CMMLU pages)
    ocr_rec_min_width: int = 96
    # onnxruntime's intra-op threads busy-wait between operators (True, its default) or sleep (False):
    # asleep, photo search through the Flow took 0.92x the p50 and 0.78x the reader's CPU-s
    # (bench/reader_flow.py --before ocr_spinning=true, typeset CMMLU pages, 2 cores)
    ocr_spinning: bool = False
    ocr_max_chars: int = 2000  # of text read from one photo that goes into the query
    # Read the text inside figures at /index and /update (stored as the image item's text, found by
    # BM25); costs one OCR pass per figure (docs/photo-search.md).
    ocr_figures: bool = True
    # Find the figure in a photo (outside its text lines) and match it against the bank's figures
    # with CLIP, beside the stems found by the text: one image encode per photo whose figure is matched.
    ocr_figure_search: bool = True
    # A photo's figure is matched when the request asks (``figures: true``) or when the words searched
    # for the photo hold fewer letters and digits than this (too few to tell its question); 0: only
    # when asked. The encode costs a full-size CN-CLIP 250-310 ms of 2 CPU cores (docs/photo-search.md).
    ocr_figure_search_below: int = 24
    # Requests read at once by one replica, each by an OCR engine of its own (+15 MB each after the
    # first, measured): requests that read nothing never wait for them (docs/photo-search.md).
    ocr_concurrency: int = 2
    # Bounds on one request's OCR work, each refused naming its setting before any OCR runs:
    ocr_max_images: int = 16  # photos one /search request may have read
    ocr_max_request_pixels: int = 120_000_000  # pixels of all the images one request has read (photos or figures)
    # Seconds a photo search may take in the reader, counted from its arrival (time waiting for a free
    # engine included: counted from when a thread picked it up, 20 quitting clients kept a new search
    # waiting 709 s); checked before each model run (a dense page read 11-13 s past a 2 s timeout when
    # it was checked only between images).
    ocr_timeout: float = 60.0
    # Photo searches a replica holds waiting for an engine beyond the ocr_concurrency being read; more
    # are refused at once with a retry hint instead of queueing without end.
    ocr_max_queue: int = 16
    # Questions of one page photo (page: true) searched each on its own, in reading order; the rest
    # are named in the photo's note. A workbook page holds 10-30; each costs one BM25 search.
    ocr_max_segments: int = 50

    def check(self) -> None:
        super().check()
        _positive("ocr_det_side", self.ocr_det_side)
        _at_most("ocr_det_side", self.ocr_det_side, OCR_MAX_SIDE, "photos are read at most that long")
        _positive("ocr_max_chars", self.ocr_max_chars)
        _positive("ocr_concurrency", self.ocr_concurrency)
        _positive("ocr_rec_batch", self.ocr_rec_batch)
        _positive("ocr_rec_min_width", self.ocr_rec_min_width)
        _at_most("ocr_rec_min_width", self.ocr_rec_min_width, OCR_MAX_SIDE, "wider is padding on every line")
        _positive("ocr_max_images", self.ocr_max_images)
        _positive("ocr_max_request_pixels", self.ocr_max_request_pixels)
        _positive("ocr_timeout", self.ocr_timeout)
        _positive("ocr_max_segments", self.ocr_max_segments)
        if self.ocr_figure_search_below < 0:
            raise ConfigError(
                f"setting 'ocr_figure_search_below' must be >= 0 (0: a figure is matched only when asked), "
                f"got {self.ocr_figure_search_below}"
            )
        if self.ocr_max_queue < 0:
            raise ConfigError(f"setting 'ocr_max_queue' must be >= 0, got {self.ocr_max_queue}")
        _choice("ocr_engine", self.ocr_engine, ("openvino", "onnxruntime"))
        if not 0.0 <= self.ocr_min_score <= 1.0:
            raise ConfigError(f"setting 'ocr_min_score' must be in [0, 1], got {self.ocr_min_score}")


class IndexerSettings(SearchDefaults):
    """Milvus store: where it is, which collection, which index, which model's vectors it holds."""

    milvus_uri: str = ""  # default: a Milvus Lite file under data_dir
    milvus_token: str = ""
    data_dir: str = "data"
    collection: str = "qbank_items"
    model: str = DEFAULT_MODEL
    # "" -> FLAT on a Milvus Lite file, HNSW on a server. Lite 2.5 never builds an IVF/AUTOINDEX
    # index over inserted rows (they stay in growing segments behind an interim IVF index): measured
    # recall@10 0.10 on 100k random vectors whatever nprobe; FLAT is exact (bench/search.py).
    index_type: str = ""
    # The vector index's build and search parameters, JSON objects ('{"M": 16, "efConstruction": 200}',
    # '{"ef": 64}'); "" -> qbank.store.collection's defaults for the index type, chosen from
    # bench/server.py. Build parameters count when a collection is created; search ones on every search.
    index_params: str = ""
    search_params: str = ""
    metric_type: str = "COSINE"
    # What a read sees on a Milvus server (Milvus Lite is always strong). Counts, /exists and gets:
    # "Strong", every acknowledged write (with Milvus' default, Bounded, a count right after an
    # upsert of 20 items said 0 on the 2.3.5 server). Searches: "Session", every write this indexer
    # acknowledged, without waiting for the server's next time tick: single-query p50 3.7 ms against
    # 307 ms for Strong on the 2.3.5 server (bench/server.py); with several indexer replicas a search
    # may miss for a moment what another replica just wrote. Each: Strong|Session|Bounded|Eventually.
    consistency_level: str = "Strong"
    search_consistency_level: str = "Session"
    default_limit: int = 10
    max_limit: int = 1000
    timeout: float = 30.0  # seconds per Milvus call
    connect_timeout: float = 5.0  # seconds to (re)connect; requests fail after this while Milvus is down
    retry_times: int = 2  # pymilvus retries of a failed call (an unreachable Milvus fails fast)
    # Request limits (docs/data-contract.md). One request is written in one Milvus call, so
    # max_docs_per_request also bounds that call (Lite 2.5 hung 10 min on one batch of 10,000).
    max_docs_per_request: int = MAX_DOCS_PER_REQUEST
    max_ids_per_request: int = 10_000  # ids / question_ids in one /delete or /exists
    max_results_per_request: int = 10_000  # queries x limit in one /search (300 x 1000 took Milvus to 9.5 GB)
    max_tag_bytes: int = MAX_TAG_BYTES  # one item's tags as JSON (10 MB of tags took the indexer to 3.6 GB)
    # The words of a bm25 or hybrid query (the encoder's setting of the same name bounds what it
    # embeds; a 40,000-character bm25 query, which never reached the encoder's check, took 21-45 s).
    max_text_chars: int = MAX_TEXT_CHARS
    max_delete: int = 1000  # a /delete removing more items needs allow_many: true
    # Milvus Lite file only: a write is refused unless the disk keeps this many bytes free after it
    # (sized from the request: qbank.store.lite.disk_needed). Milvus Lite 2.5.1 acknowledges writes
    # it could not store on a full disk ("Insert data failed: database or disk is full" in its log,
    # success to the caller): 36,000 of 40,000 acknowledged items were gone after a restart.
    min_free_disk_bytes: int = 128 * 1024 * 1024
    # Full text (BM25 over stems, beside the CLIP vectors): the analyzer is fixed when the collection
    # is created; "chinese" (jieba) splits Chinese words, "standard" suits space-separated text.
    text_analyzer: str = "chinese"
    rrf_k: int = 60  # hybrid: reciprocal rank fusion constant
    hybrid_weights: str = ""  # hybrid: "dense,bm25" weights (e.g. "0.7,0.3") -> weighted fusion instead of RRF

    def check(self) -> None:
        super().check()
        _choice("metric_type", self.metric_type, ("COSINE", "IP"))
        _positive("default_limit", self.default_limit)
        _positive("max_limit", self.max_limit)
        _positive("timeout", self.timeout)
        _positive("connect_timeout", self.connect_timeout)
        if self.retry_times < 0:
            raise ConfigError(f"setting 'retry_times' must be >= 0, got {self.retry_times}")
        for name in (
            "max_docs_per_request",
            "max_ids_per_request",
            "max_results_per_request",
            "max_tag_bytes",
            "max_text_chars",
        ):
            _positive(name, getattr(self, name))
        if self.max_docs_per_request > 10_000:
            raise ConfigError(
                f"setting 'max_docs_per_request' must be <= 10000 (one Milvus write per request), "
                f"got {self.max_docs_per_request}"
            )
        if self.max_delete < 0:
            raise ConfigError(f"setting 'max_delete' must be >= 0, got {self.max_delete}")
        if self.min_free_disk_bytes < 0:
            raise ConfigError(f"setting 'min_free_disk_bytes' must be >= 0, got {self.min_free_disk_bytes}")
        _choice("text_analyzer", self.text_analyzer, TEXT_ANALYZERS)
        _choice("consistency_level", self.consistency_level, CONSISTENCY_LEVELS)
        _choice("search_consistency_level", self.search_consistency_level, CONSISTENCY_LEVELS)
        _positive("rrf_k", self.rrf_k)
        if self.index_type and not is_milvus_server_uri(self.uri) and self.index_type not in LITE_INDEX_TYPES:
            raise ConfigError(
                f"setting 'index_type' is {self.index_type!r}, which Milvus Lite ({self.uri}) cannot build: it "
                f"takes {LITE_INDEX_TYPES} (FLAT, the default, is the one it searches exactly); other types "
                "need a Milvus server (QBANK_MILVUS_URI)"
            )
        _json_params("index_params", self.index_params)
        _json_params("search_params", self.search_params)
        if self.hybrid_weights:
            self.weights()

    def weights(self) -> tuple[float, float] | None:
        """The hybrid weights setting as (dense, bm25), None for RRF."""
        if not self.hybrid_weights:
            return None
        try:
            return parse_weights(self.hybrid_weights, "setting 'hybrid_weights'")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def limits(self) -> Limits:
        return Limits(
            max_limit=self.max_limit,
            max_ids=self.max_ids_per_request,
            max_docs=self.max_docs_per_request,
            max_results=self.max_results_per_request,
            default_limit=self.default_limit,
        )

    @property
    def vector_index(self) -> str:
        """The index type a new collection gets, as far as the URI tells (the store also gives FLAT to
        Milvus Lite's server binary reached by URI: qbank.store.collection.vector_index_type)."""
        return self.index_type or ("HNSW" if is_milvus_server_uri(self.uri) else "FLAT")

    @property
    def index_build_params(self) -> dict[str, int | float | str]:
        """The index_params setting as a dict ({} when unset)."""
        return _json_params("index_params", self.index_params)

    @property
    def index_search_params(self) -> dict[str, int | float | str]:
        """The search_params setting as a dict ({} when unset)."""
        return _json_params("search_params", self.search_params)

    @property
    def uri(self) -> str:
        if self.milvus_uri:
            return self.milvus_uri
        return str(Path(self.data_dir).resolve() / "milvus_lite.db")


class ServeSettings(QbankSettings):
    """qbank-serve and flow.yml (``${{ ENV.QBANK_* }}``): the gateway's ports, the replicas, the file."""

    grpc_port: int = 51000
    http_port: int = 51001
    ws_port: int = 51002
    # Prometheus metrics (jina's monitoring, with qbank's series: qbank.service.metrics), one port a
    # part; an executor's replicas after the first get a free port of jina's choosing.
    metrics_port: int = 51003
    reader_metrics_port: int = 51004
    encoder_metrics_port: int = 51005
    indexer_metrics_port: int = 51006
    ocr_replicas: int = 1
    encoder_replicas: int = 1
    # More than 1 only with a Milvus server: Milvus Lite holds one process per file.
    indexer_replicas: int = 1
    # Where the executors of flow.yml listen: loopback, so only this machine's gateway reaches them
    # (they take no token; with one set on the gateway, /count and /delete still answered on the
    # indexer's own port from anywhere). 0.0.0.0 only with a firewall that does the same job.
    executor_host: str = "127.0.0.1"
    flow: str = ""  # the flow YAML; "" -> ./flow.yml
    # Show the third-party warnings qbank.quiet knows to be noise (pkg_resources, jina's annotation
    # notes, progress bars of loading a model) instead of silencing them.
    show_warnings: bool = False


class GatewaySettings(QbankSettings):
    """The gateway: with a token set, every protocol requires it (qbank.service.gateway); the search
    page's figure route serves stored figure files from ``figure_roots`` only (qbank.service.page)."""

    auth_token: str = ""
    # Folders (separated by os.pathsep, ':') whose image files the page may show: a stored figure is a
    # path the importer read; outside every root (or with none set) the page shows no file.
    figure_roots: str = ""
    max_figure_bytes: int = 20 * 1024 * 1024  # a figure file the page route will send
    # One request's message on any protocol (gRPC message, HTTP body, WebSocket frame), refused at
    # the gateway before any executor sees it: a 200 MB message was carried through the gateway,
    # reader and encoder (about 1.6 GB each) before the per-image limit refused it. 0 -> derived
    # from the per-item limit: 3 x QBANK_MAX_IMAGE_BYTES (two of the largest images, base64 included).
    max_request_bytes: int = 0
    max_image_bytes: int = MAX_IMAGE_BYTES  # the executors' setting of the same name
    # Web origins (comma-separated, "https://exams.example.com") whose pages may call the HTTP API from
    # a browser. Empty: none, and no CORS header at all (jina's `cors: true` allowed every website);
    # the search page at /ui is served from the same origin and needs none.
    cors_origins: str = ""

    def check(self) -> None:
        _positive("max_figure_bytes", self.max_figure_bytes)
        self.cors_origin_list()
        _positive("max_image_bytes", self.max_image_bytes)
        if self.max_request_bytes < 0:
            raise ConfigError(f"setting 'max_request_bytes' must be >= 0, got {self.max_request_bytes}")
        least = self.max_image_bytes * 4 // 3 + 64 * 1024  # one largest image as base64 in JSON
        if self.max_request_bytes and self.max_request_bytes < least:
            raise ConfigError(
                f"setting 'max_request_bytes' is {self.max_request_bytes}: a request must hold one image of "
                f"QBANK_MAX_IMAGE_BYTES ({self.max_image_bytes}) sent as base64, so at least {least}"
            )
        for root in self.figure_root_paths():
            if not root.is_dir():
                raise ConfigError(f"setting 'figure_roots': {str(root)!r} is not a folder (QBANK_FIGURE_ROOTS)")

    @property
    def request_byte_limit(self) -> int:
        """The largest message a request may be, in bytes (max_request_bytes, or its derived default)."""
        return self.max_request_bytes or default_request_bytes(self.max_image_bytes)

    def cors_origin_list(self) -> list[str]:
        """The allowed origins, each checked: scheme, host and port only, as a browser sends Origin."""
        origins = [part.strip().rstrip("/") for part in self.cors_origins.split(",") if part.strip()]
        for origin in origins:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise ConfigError(
                    f"setting 'cors_origins': {origin!r} is not a web origin such as https://exams.example.com "
                    "(scheme, host and port only; QBANK_CORS_ORIGINS, comma-separated)"
                )
        return origins

    def figure_root_paths(self) -> list[Path]:
        """The roots, absolute and with links resolved (what a figure's real path must lie under)."""
        return [Path(part).expanduser().resolve() for part in self.figure_roots.split(os.pathsep) if part.strip()]


# What flow.yml reads as ${{ ENV.* }}; qbank-serve fills in those the operator left unset.
FLOW_ENV_DEFAULTS: dict[str, str] = {
    f"QBANK_{name.upper()}": str(ServeSettings.__fields__[name].default)
    for name in (
        "grpc_port",
        "http_port",
        "ws_port",
        "metrics_port",
        "reader_metrics_port",
        "encoder_metrics_port",
        "indexer_metrics_port",
        "ocr_replicas",
        "encoder_replicas",
        "indexer_replicas",
        "executor_host",
    )
}


class ClientSettings(QbankSettings):
    """What the client side reads (qbank_client: the ``qbank`` CLI and QbankClient): where the service
    is, and the token every request carries when the gateway requires one."""

    url: str = "grpc://127.0.0.1:51000"  # QBANK_URL: the `qbank` CLI's --url default
    auth_token: str = ""  # QBANK_AUTH_TOKEN: the gateway's token (GatewaySettings), sent by the client


def env_names() -> set[str]:
    """Every QBANK_* variable the server reads (k8s/ may set no other)."""
    return set().union(
        *(c.env_names() for c in (EncoderSettings, OcrSettings, IndexerSettings, ServeSettings, GatewaySettings))
    )
