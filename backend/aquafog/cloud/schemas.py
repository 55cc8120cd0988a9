"""The cloud's JSON shapes as OpenAPI components, beside the shared ones in api/schemas.py
(the error body, the valve command, the policy settings, the fog's meter detail it forwards)."""

from __future__ import annotations

from ..api.schemas import FOG, I, N, S, arr, enum, null, obj, ref
from ..federation import POLICY_SOURCES
from ..federation import STATUSES as ROUTED_STATUSES
from ..policy import MODES
from ..protocol import VALVE_STATES
from .api import PERIODS

_SERVED = {"region": S, "served_by": {"type": "string", "description": "the fog's API URL that answered"}}
_CLOUD_PERIOD = obj(kind=enum(PERIODS), key=S, timezone=S)
_FOG_POLICY = obj(mode=enum(MODES), source=enum(POLICY_SOURCES), updated_ms=I, over=I, blocked=I)

CLOUD = {
    # the fog's shapes inside the answers the cloud forwards
    **{name: FOG[name] for name in ("MeterHealth", "Reading", "Command")},
    "CityRanking": obj(
        period=_CLOUD_PERIOD, n=I,
        exact_up_to={"type": "integer", "description": "the largest n answered exactly (the smallest top-K a fog sends)"},
        regions=arr(S), missing_regions=arr(S), items=arr(obj(rank=I, meter=S, region=S, litres=N))),
    "CityMean": obj(
        period=_CLOUD_PERIOD, meters=I, sum_ml=I, litres=N, mean_litres=null(N),
        regions=arr(obj(region=S, meters=I, sum_ml=I, litres=N, mean_litres=null(N), as_of_ms=I)),
        missing_regions=arr(S)),
    "FogList": obj(items=arr(obj(
        region=S, last_partial_ms=null(I), meters=I, api_url=null(S), status=enum(("ok", "degraded"), True),
        problems=arr(S), version=null(S), info_ms=null(I), info_received_ms=null(I)))),
    "CityPolicy": obj(settings=null(ref("PolicySettings")), updated_ms=null(I),
                      fogs=arr(obj(region=S, policy=null(_FOG_POLICY)))),
    "CityPolicySet": obj(settings=ref("PolicySettings"), updated_ms=I,
                         sent={"type": "boolean", "description": "false while the cloud broker is down; "
                                                                 "they go out when it is back"}),
    "RoutedCommand": obj(
        "A valve command the cloud routed to the owning fog, with the status the fog reports.",
        id=S, meter=S, region=S, state=enum(VALVE_STATES), reason=null(S),
        status=enum(("routed", *ROUTED_STATUSES)), error=null(S), created_ms=I, updated_ms=I, expires_ms=I),
    "RoutedCommandBody": obj(command=ref("RoutedCommand")),
    "ForwardedMeterDetail": {**FOG["MeterDetail"], "properties": {**FOG["MeterDetail"]["properties"], **_SERVED},
                             "required": [*FOG["MeterDetail"]["required"], *_SERVED]},
    "ForwardedReadingPage": {**FOG["ReadingPage"], "properties": {**FOG["ReadingPage"]["properties"], **_SERVED},
                             "required": [*FOG["ReadingPage"]["required"], *_SERVED]},
    "ForwardedCommandPage": {**FOG["CommandPage"], "properties": {**FOG["CommandPage"]["properties"], **_SERVED},
                             "required": [*FOG["CommandPage"]["required"], *_SERVED]},
    "ForwardedUsage": {**FOG["Usage"], "properties": {**FOG["Usage"]["properties"], **_SERVED},
                       "required": [*FOG["Usage"]["required"], *_SERVED]},
    "ForwardedBill": {**FOG["Bill"], "properties": {**FOG["Bill"]["properties"], **_SERVED},
                      "required": [*FOG["Bill"]["required"], *_SERVED]},
    "CloudHealth": {**obj(status=enum(("ok", "degraded")), problems=arr(S)),
                    "description": "More keys (version, uptime, partials) follow; 503 when degraded.",
                    "additionalProperties": True},
}
