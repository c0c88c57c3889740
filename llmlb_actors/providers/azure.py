"""Azure OpenAI: OpenAI's chat completions behind per-deployment URLs and an ``api-key``.

``base_url`` is the resource (``https://{resource}.openai.azure.com``) and
``model`` the deployment name. Two URL shapes:

- ``api_version`` set (the classic API):
  ``POST {base}/openai/deployments/{model}/chat/completions?api-version={api_version}``;
- ``api_version=None`` (the v1 API, GA since August 2025):
  ``POST {base}/openai/v1/chat/completions`` with the deployment as ``model``.

Request and answer shapes, streams and tools are OpenAI's, so everything but
the URLs and the key header comes from `OpenAIAdapter`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

from .._secrets import Secret
from ._wire import check_header_value
from .openai import OpenAIAdapter

if TYPE_CHECKING:
    from .._config import ProviderConfig

__all__ = ["AzureOpenAIAdapter"]


def resource_root(base_url: str) -> str:
    """The resource origin, tolerating a base URL given down to ``/openai`` or ``/openai/v1``."""
    root = base_url.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI (``protocol="azure"``); ``base_url`` is required."""

    protocol: ClassVar[str] = "azure"
    default_base_url: ClassVar[str] = ""
    label: ClassVar[str] = "Azure OpenAI"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        root = resource_root(self.base_url)
        version = config.api_version
        if version:
            deployment = quote(self._model, safe="")
            query = f"?api-version={quote(version, safe='')}"
            self._url = f"{root}/openai/deployments/{deployment}/chat/completions{query}"
            # Lists the resource's models; answers 2xx only with a valid key and version.
            self._health_url = f"{root}/openai/models{query}"
        else:
            self._url = f"{root}/openai/v1/chat/completions"
            self._health_url = f"{root}/openai/v1/models"

    def auth_headers(self, config: ProviderConfig) -> list[tuple[str, str]]:
        """The key in ``api-key`` (Azure's own header, not a Bearer token)."""
        if not config.api_key:
            return []
        check_header_value(config, "api_key", config.api_key)
        return [("api-key", Secret(config.api_key))]
