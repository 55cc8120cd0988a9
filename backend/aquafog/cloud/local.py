"""An `aquafog cloud` process on this machine, for the demo and the benchmarks
(localproc.py): SQLite under its directory unless a db_url is given."""

from __future__ import annotations

from pathlib import Path

from ..localproc import LocalService


class LocalCloud(LocalService):
    command = name = "cloud"

    def __init__(self, workdir: Path, broker_port: int, http_port: int | None = None, *,
                 new_session: bool = False, **settings):
        workdir = Path(workdir)
        cfg = {"db_url": f"sqlite:///{workdir / 'cloud.db'}", "mqtt_port": broker_port, **settings}
        self.db_url = cfg["db_url"]
        super().__init__(workdir, cfg, http_port, new_session=new_session)

    def _accounts(self):
        from ..accounts import Accounts
        from .store import ACCOUNTS, open_cloud_engine
        return Accounts(ACCOUNTS), open_cloud_engine(self.db_url)
