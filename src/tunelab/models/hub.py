"""Hub model ids, and what to do when the hub cannot be reached.

A machine without network (a laptop on a train, a cluster node behind a firewall) that loads a hub model it downloaded
earlier waited minutes before this module: huggingface_hub retries every file it asks for five times (1 + 2 + 4 + 8 +
8 s) before it falls back to its cache, and transformers asks for a dozen files — a tiny cached BERT took 3 min 18 s
to start training, with 40 "Retrying" lines. `reach_hub` tries one TCP connection to the hub's host first (honouring
HF_ENDPOINT, e.g. a mirror) and, where none can be made, turns huggingface_hub's offline mode on for the process, as
HF_HUB_OFFLINE=1 would: the cache answers at once, and a model that is not in it fails at once.
"""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

from tunelab.progress import say

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# The hub's first models have ids without an org (`bert-base-uncased`, `gpt2`, …): moved under orgs in 2024
# (google-bert/, openai-community/, FacebookAI/, …), they still resolve by the old names, which HF Trainer users and
# countless recipes write. Any other name without a `/` cannot be a hub id, so it is refused before a lookup.
_LEGACY_HUB = frozenset("""
albert-base-v1 albert-base-v2 albert-large-v1 albert-large-v2 albert-xlarge-v1 albert-xlarge-v2 albert-xxlarge-v1
albert-xxlarge-v2 bert-base-cased bert-base-uncased bert-large-cased bert-large-uncased bert-base-chinese
bert-base-german-cased bert-base-german-dbmdz-cased bert-base-german-dbmdz-uncased bert-base-multilingual-cased
bert-base-multilingual-uncased bert-base-cased-finetuned-mrpc bert-large-cased-whole-word-masking
bert-large-uncased-whole-word-masking bert-large-cased-whole-word-masking-finetuned-squad
bert-large-uncased-whole-word-masking-finetuned-squad camembert-base ctrl distilbert-base-cased distilbert-base-uncased
distilbert-base-cased-distilled-squad distilbert-base-uncased-distilled-squad distilbert-base-german-cased
distilbert-base-multilingual-cased distilbert-base-uncased-finetuned-sst-2-english distilgpt2 distilroberta-base gpt2
gpt2-medium gpt2-large gpt2-xl openai-gpt roberta-base roberta-large roberta-large-mnli roberta-base-openai-detector
roberta-large-openai-detector t5-small t5-base t5-large t5-3b t5-11b transfo-xl-wt103 xlm-clm-ende-1024
xlm-clm-enfr-1024 xlm-mlm-100-1280 xlm-mlm-17-1280 xlm-mlm-en-2048 xlm-mlm-ende-1024 xlm-mlm-enfr-1024
xlm-mlm-enro-1024 xlm-mlm-tlm-xnli15-1024 xlm-mlm-xnli15-1024 xlm-roberta-base xlm-roberta-large
xlm-roberta-large-finetuned-conll02-dutch xlm-roberta-large-finetuned-conll02-spanish
xlm-roberta-large-finetuned-conll03-english xlm-roberta-large-finetuned-conll03-german xlnet-base-cased
xlnet-large-cased""".split())  # noqa: SIM905 - a list the width of the page


def hub_id(name: str) -> bool:
    """`name` can be a hub model id: org/name, or one of the hub's older ids without an org."""
    return bool(_HUB_ID.match(name)) or name in _LEGACY_HUB


_turned_offline = False  # offline mode is ours (turned on below), not the user's HF_HUB_OFFLINE
_probed: dict[tuple[str, int], tuple[float, bool]] = {}  # (host, port) → (when, reachable): one probe a minute


def _reachable(host: str, port: int) -> bool:
    when, reachable = _probed.get((host, port), (-1e9, False))
    if time.monotonic() - when > 60:
        try:
            socket.create_connection((host, port), timeout=3).close()
            reachable = True
        except OSError:
            reachable = False
        _probed[(host, port)] = (time.monotonic(), reachable)
    return reachable


def turned_offline() -> bool:
    """Whether `reach_hub` turned offline mode on (the datasets library keeps a flag of its own to follow it)."""
    return _turned_offline


def reach_hub(name: str) -> None:
    """Before a hub id is loaded: offline mode on, with one note, when the hub's host takes no connection (not where
    the user set HF_HUB_OFFLINE, nor where a proxy carries huggingface_hub's requests: the proxy may reach what this
    machine cannot); off again once the host answers (a long-lived process: the Python API, a server)."""
    global _turned_offline
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and not _turned_offline:
        return
    url = urlsplit(constants.ENDPOINT)
    if url.hostname is None or ((proxies := getproxies()).get(url.scheme) or proxies.get("all")) \
            and not proxy_bypass(url.hostname):
        return
    if _reachable(url.hostname, url.port or (80 if url.scheme == "http" else 443)):
        constants.HF_HUB_OFFLINE = _turned_offline = False
    elif not _turned_offline:
        constants.HF_HUB_OFFLINE = _turned_offline = True
        say(f"note: {url.hostname} cannot be reached: {name} is read from the Hugging Face cache only (as with "
            "HF_HUB_OFFLINE=1)")
