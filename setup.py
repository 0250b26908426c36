"""Only here to ship qbank_jina_compat.pth into site-packages (see src/qbank_jina_compat.py), where
the patch module is part of the build (server images copy src/qbank alone and get neither).

An editable install does not run build_py, so scripts/bootstrap.sh copies the .pth itself."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "qbank_jina_compat.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        if not (Path(__file__).parent / "src" / "qbank_jina_compat.py").is_file():
            return  # a server image's build context: no clip_client there, no patch
        self.copy_file(str(Path(__file__).parent / PTH), str(Path(self.build_lib) / PTH), preserve_mode=0)


setup(cmdclass={"build_py": BuildPyWithPth})
