"""Configuration: flow.yml ``with:`` values, overridden by QBANK_* variables, checked with clear errors."""

from __future__ import annotations

import pytest
from conftest import patched_env

from qbank.config import (
    ConfigError,
    EncoderSettings,
    GatewaySettings,
    IndexerSettings,
    OcrSettings,
    ServeSettings,
    env_names,
)


def test_environment_overrides_with_values_and_defaults_work():
    assert EncoderSettings.resolve().model == "OFA-Sys/chinese-clip-vit-base-patch16"
    with patched_env({"QBANK_ENGINE": "onnx", "QBANK_MINIBATCH_SIZE": "8"}):
        settings = EncoderSettings.resolve(engine="torch", minibatch_size=64, device="cpu")
    assert (settings.engine, settings.minibatch_size, settings.device) == ("onnx", 8, "cpu")


def test_bad_settings_name_the_setting():
    with pytest.raises(ConfigError, match="'engine' must be one of"):
        EncoderSettings.resolve(engine="tensorrt")
    with patched_env({"QBANK_MINIBATCH_SIZE": "many"}):
        with pytest.raises(ConfigError, match="'minibatch_size'"):
            EncoderSettings.resolve()
    with pytest.raises(ConfigError, match="unknown settings"):
        IndexerSettings.resolve(colection="typo")
    with patched_env({"QBANK_SEARCH_MODE": "fuzzy"}):  # one setting, read by both: refused by both
        for settings in (EncoderSettings, IndexerSettings):
            with pytest.raises(ConfigError, match="'search_mode' must be one of"):
                settings.resolve()
    with pytest.raises(ConfigError, match="'ocr_engine' must be one of \\('openvino', 'onnxruntime'\\), got 'paddle'"):
        OcrSettings.resolve(ocr_engine="paddle")
    with patched_env({"QBANK_OCR_REC_MIN_WIDTH": "0"}):
        with pytest.raises(ConfigError, match="'ocr_rec_min_width' must be > 0, got 0"):
            OcrSettings.resolve()
    with patched_env({"QBANK_OCR_REC_MIN_WIDTH": "100000"}):
        with pytest.raises(ConfigError, match="'ocr_rec_min_width' must be at most 2000 .*got 100000"):
            OcrSettings.resolve()
    with pytest.raises(ConfigError, match="'ocr_det_side' must be at most 2000 .*got 4000"):
        OcrSettings.resolve(ocr_det_side=4000)
    with patched_env({"QBANK_OCR_FIGURE_SEARCH_BELOW": "-1"}):
        with pytest.raises(ConfigError, match="'ocr_figure_search_below' must be >= 0 .*got -1"):
            OcrSettings.resolve()
    with patched_env({"QBANK_OCR_SPINNING": "sometimes"}):
        with pytest.raises(ConfigError, match="'ocr_spinning'"):
            OcrSettings.resolve()
    with patched_env({"QBANK_OCR_REC_MIN_WIDTH": "320", "QBANK_OCR_DET_SIDE": "960"}):
        overridden = OcrSettings.resolve()
    defaults = OcrSettings.resolve()
    assert (overridden.ocr_rec_min_width, overridden.ocr_det_side) == (320, 960)
    assert (defaults.ocr_rec_min_width, defaults.ocr_det_side, defaults.ocr_spinning) == (96, 736, False)


def test_settings_read_types_as_written_in_yaml_and_shells():
    """pydantic reads the variables; an empty one is unset, 2.5 is not a whole number, and the error
    says where the value came from."""
    with patched_env({"QBANK_DEVICE": "", "QBANK_FETCH_PRIVATE": "on", "QBANK_FETCH_TIMEOUT": "2.5"}):
        settings = EncoderSettings.resolve(minibatch_size=16.0)
        assert (settings.device, settings.fetch_private, settings.fetch_timeout) == ("auto", True, 2.5)
        assert settings.minibatch_size == 16 and isinstance(settings.minibatch_size, int)
        assert EncoderSettings.from_environment() == {"fetch_private", "fetch_timeout"}
    with pytest.raises(ConfigError, match=r"setting 'minibatch_size' \(with: 2.5\): must be a whole number"):
        EncoderSettings.resolve(minibatch_size=2.5)
    with patched_env({"QBANK_TIMEOUT": "soon"}):
        with pytest.raises(
            ConfigError, match=r"setting 'timeout' \(QBANK_TIMEOUT='soon'\): value is not a valid float"
        ):
            IndexerSettings.resolve(timeout=3)
    with patched_env({"QBANK_GRPC_PORT": "6000", "QBANK_AUTH_TOKEN": "t"}):
        assert ServeSettings.resolve().grpc_port == 6000 and GatewaySettings.resolve().auth_token == "t"
    assert {"QBANK_MODEL", "QBANK_MILVUS_URI", "QBANK_FLOW", "QBANK_AUTH_TOKEN", "QBANK_ONNX_PRECISION"} <= env_names()


def test_indexer_defaults_to_a_milvus_lite_file_under_the_data_dir(tmp_path):
    settings = IndexerSettings.resolve(data_dir=str(tmp_path))
    assert settings.uri == str(tmp_path / "milvus_lite.db")
    assert IndexerSettings.resolve(milvus_uri="http://milvus:19530").uri == "http://milvus:19530"


def test_ports_that_cannot_be_listened_on_are_refused_by_name_before_anything_starts():
    """Every port flow.yml reads (the gateway's three and the four metrics ports) is a number from 1
    to 65535, and no two parts share one."""
    from qbank.cli.serve import main as serve_main
    from qbank.config import check_flow_topology

    check_flow_topology({})  # the defaults
    with pytest.raises(ConfigError, match="QBANK_READER_METRICS_PORT must be a port number from 1 to 65535, got 'abc'"):
        check_flow_topology({"QBANK_READER_METRICS_PORT": "abc"})
    with pytest.raises(ConfigError, match="QBANK_METRICS_PORT must be a port number from 1 to 65535, got '70000'"):
        check_flow_topology({"QBANK_METRICS_PORT": "70000"})
    with pytest.raises(ConfigError, match="QBANK_METRICS_PORT and QBANK_HTTP_PORT are both 51001"):
        check_flow_topology({"QBANK_METRICS_PORT": "51001"})
    with patched_env({"QBANK_INDEXER_METRICS_PORT": "0"}):
        with pytest.raises(SystemExit, match="error: QBANK_INDEXER_METRICS_PORT must be a port number"):
            serve_main([])


def test_indexer_replicas_above_one_need_a_milvus_server():
    from qbank.cli.serve import main as serve_main
    from qbank.config import check_flow_topology

    check_flow_topology({"QBANK_INDEXER_REPLICAS": "1"})
    check_flow_topology({"QBANK_INDEXER_REPLICAS": "3", "QBANK_MILVUS_URI": "http://milvus:19530"})
    with pytest.raises(ConfigError, match="QBANK_INDEXER_REPLICAS=2 needs a Milvus server"):
        check_flow_topology({"QBANK_INDEXER_REPLICAS": "2"})
    with pytest.raises(ConfigError, match="one process per file"):
        check_flow_topology({"QBANK_INDEXER_REPLICAS": "2", "QBANK_MILVUS_URI": "/data/bank.db"})
    with pytest.raises(ConfigError, match="QBANK_ENCODER_REPLICAS must be a whole number"):
        check_flow_topology({"QBANK_ENCODER_REPLICAS": "two"})
    # qbank-serve refuses before starting anything, with the message and no traceback.
    with patched_env({"QBANK_INDEXER_REPLICAS": "2", "QBANK_MILVUS_URI": ""}):
        with pytest.raises(SystemExit, match="error: QBANK_INDEXER_REPLICAS=2 needs a Milvus server"):
            serve_main([])


def test_vector_index_parameters_are_json_objects_named_when_wrong():
    settings = IndexerSettings.resolve(index_params='{"M": 8, "efConstruction": 64}', search_params='{"ef": 32}')
    assert settings.index_build_params == {"M": 8, "efConstruction": 64}
    assert settings.index_search_params == {"ef": 32}
    assert IndexerSettings.resolve().index_search_params == {}
    for value, problem in (
        ("ef=64", "must be a JSON object such as"),
        ("[64]", "must be a JSON object of names"),
        ('{"ef": true}', "must be a JSON object of names"),
        ('{"ef": {"x": 1}}', "must be a JSON object of names"),
    ):
        with patched_env({"QBANK_SEARCH_PARAMS": value}):
            with pytest.raises(ConfigError, match=f"setting 'search_params' {problem}"):
                IndexerSettings.resolve()
    with pytest.raises(ConfigError, match="setting 'index_params' must be a JSON object"):
        IndexerSettings.resolve(index_params="{M: 8}")


def test_an_index_type_milvus_lite_cannot_build_is_refused_at_start():
    """Lite 2.5.1 refused HNSW only at the first write ("local mode only support FLAT IVF_FLAT AUTOINDEX")."""
    with pytest.raises(
        ConfigError, match=r"setting 'index_type' is 'HNSW', which Milvus Lite .* server \(QBANK_MILVUS_URI\)"
    ):
        IndexerSettings.resolve(index_type="HNSW")
    assert IndexerSettings.resolve(index_type="HNSW", milvus_uri="http://milvus:19530").vector_index == "HNSW"
    assert IndexerSettings.resolve(index_type="IVF_FLAT").vector_index == "IVF_FLAT"
