"""Quota-aware balancing: the `QuotaStore` seam, its values, and the helpers behind them.

A provider's budgets come from its config (``ProviderConfig.rpm``, ``tpm``,
``rpd``, ``tpd``) and from what its responses say (rate-limit headers, Gemini's
``RetryInfo``/``QuotaFailure``). They live behind a `QuotaStore`: the default
`InProcessQuotaStore` keeps them in this process; a store shared by several
balancers implements the same interface — ``reserve``, ``reconcile``,
``observe`` (one round trip each), ``earliest`` and ``view`` (local reads),
``configure``/``forget``, ``mark_sent``, and for a remote store ``claim``,
``report_health`` and ``run`` — and is passed as ``BalancerConfig(quota_store=...)``
(see `QuotaStore`). `RedisQuotaStore` (what ``BalancerConfig.shared_state`` makes)
is one: it shares budgets and health between balancers through Redis.
"""

from ._quota._estimate import TiktokenEstimator as TiktokenEstimator
from ._quota._estimate import TokenEstimator as TokenEstimator
from ._quota._estimate import completion_reservation as completion_reservation
from ._quota._estimate import default_estimator as default_estimator
from ._quota._estimate import estimate_chars as estimate_chars
from ._quota._estimate import estimate_cost as estimate_cost
from ._quota._headers import parse_gemini_quota as parse_gemini_quota
from ._quota._headers import parse_go_duration as parse_go_duration
from ._quota._headers import parse_rate_limit_headers as parse_rate_limit_headers
from ._quota._headers import parse_rfc3339 as parse_rfc3339
from ._quota._store import DEFAULT_WINDOW_GUARD as DEFAULT_WINDOW_GUARD
from ._quota._store import InProcessQuotaStore as InProcessQuotaStore
from ._quota._store import QuotaStore as QuotaStore
from ._quota._types import Admission as Admission
from ._quota._types import Cost as Cost
from ._quota._types import Hint as Hint
from ._quota._types import Limits as Limits
from ._quota._types import Observation as Observation
from ._quota._types import QuotaView as QuotaView
from ._quota._types import Reservation as Reservation
from ._shared._store import RedisQuotaStore as RedisQuotaStore

__all__ = [
    "DEFAULT_WINDOW_GUARD",
    "Admission",
    "Cost",
    "Hint",
    "InProcessQuotaStore",
    "Limits",
    "Observation",
    "QuotaStore",
    "QuotaView",
    "RedisQuotaStore",
    "Reservation",
    "TiktokenEstimator",
    "TokenEstimator",
    "completion_reservation",
    "default_estimator",
    "estimate_chars",
    "estimate_cost",
    "parse_gemini_quota",
    "parse_go_duration",
    "parse_rate_limit_headers",
    "parse_rfc3339",
]
