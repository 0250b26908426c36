"""Only here to ship qbank_jina_compat.pth into site-packages beside the module (see
qbank_jina_compat.py). An editable install does not run build_py, so scripts/bootstrap.sh copies the
.pth itself."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "qbank_jina_compat.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(str(Path(__file__).parent / PTH), str(Path(self.build_lib) / PTH), preserve_mode=0)


setup(cmdclass={"build_py": BuildPyWithPth})
