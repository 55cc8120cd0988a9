import pytest

from .gatewayproc import GatewayProcess


@pytest.fixture
def gateway_factory(tmp_path, broker):
    made = []

    def make(meters=(), **settings) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / f"gw{len(made)}", broker.port, meters, **settings)
        made.append(gw)
        return gw
    yield make
    for gw in made:
        gw.stop()
