"""Configuration: flow.yml ``with:`` values, overridden by QBANK_* variables, checked with clear errors."""

from __future__ import annotations

import pytest
from conftest import patched_env

from qbank.config import ConfigError, EncoderSettings, IndexerSettings


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


def test_indexer_defaults_to_a_milvus_lite_file_under_the_data_dir(tmp_path):
    settings = IndexerSettings.resolve(data_dir=str(tmp_path))
    assert settings.uri == str(tmp_path / "milvus_lite.db")
    assert IndexerSettings.resolve(milvus_uri="http://milvus:19530").uri == "http://milvus:19530"
