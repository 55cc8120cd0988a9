"""A gateway process on this machine, for the demo, the benchmarks and the tests
(localproc.py): writes its config, registers meters, starts `aquafog gateway`, waits
until it is healthy, stops it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..localproc import LocalService


class LocalGateway(LocalService):
    command = name = "gateway"

    def __init__(self, workdir: Path, broker_port: int, meters=(), http_port: int | None = None, *,
                 new_session: bool = False, **settings):
        workdir = Path(workdir)
        self.db_path = Path(settings.pop("db_path", workdir / "gateway.db"))
        super().__init__(workdir, {"db_path": str(self.db_path), "mqtt_port": broker_port, **settings}, http_port,
                         new_session=new_session)
        if meters:
            self.register(meters)

    def _accounts(self):
        from ..accounts import Accounts
        from ..store.engine import open_engine
        from ..store.schema import ACCOUNTS
        return Accounts(ACCOUNTS), open_engine(self.db_path)

    def register(self, meters) -> None:
        ids = self.workdir / "meters.txt"
        ids.write_text("\n".join(meters) + "\n")
        subprocess.run([sys.executable, "-m", "aquafog", "meter", "add", "-c", str(self.conf), "--file", str(ids)],
                       check=True, stdout=subprocess.DEVNULL)
