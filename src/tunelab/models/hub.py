"""Hub model ids, and what to do when the hub cannot be reached.

A machine without network (a laptop on a train, a cluster node behind a firewall) that loads a hub model it downloaded
earlier waited minutes before this module: huggingface_hub retries every file it asks for five times (1 + 2 + 4 + 8 +
8 s) before it falls back to its cache, and transformers asks for a dozen files — a tiny cached BERT took 3 min 18 s
to start training, with 40 "Retrying" lines. `reach_hub` tries one TCP connection to the hub's host first (honouring
HF_ENDPOINT, e.g. a mirror) and, where none can be made, turns huggingface_hub's offline mode on for the process, as
HF_HUB_OFFLINE=1 would: the cache answers at once, and a model that is not in it fails at once.
"""

from __future__ import annotations

import functools
import re
import socket
import sys
from urllib.parse import urlsplit

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# The hub's first models have ids without an org (`bert-base-uncased`, `gpt2`, …): moved under orgs in 2024
# (google-bert/, openai-community/, FacebookAI/, …), they still resolve by the old names, which HF Trainer users and
# countless recipes write. Any other name without a `/` cannot be a hub id, so it is refused before a lookup.
_LEGACY_HUB = re.compile(
    r"^(?:albert-(?:base|large|xlarge|xxlarge)-v[12]|bert-(?:base|large)-(?:un)?cased(?:-whole-word-masking"
    r"(?:-finetuned-squad)?)?|bert-base-(?:chinese|german-cased|german-dbmdz-(?:un)?cased|multilingual-(?:un)?cased"
    r"|cased-finetuned-mrpc)|camembert-base|ctrl|distilbert-base-(?:un)?cased(?:-distilled-squad)?"
    r"|distilbert-base-(?:multilingual-cased|german-cased|uncased-finetuned-sst-2-english)|distilgpt2"
    r"|distilroberta-base|gpt2(?:-medium|-large|-xl)?|openai-gpt|roberta-(?:base|large)(?:-mnli|-openai-detector)?"
    r"|t5-(?:small|base|large|3b|11b)|transfo-xl-wt103|xlm-(?:clm|mlm)-[\w-]+|xlm-roberta-(?:base|large)"
    r"(?:-finetuned-conll0[23]-(?:english|german|dutch|spanish))?|xlnet-(?:base|large)-cased)$")


def hub_id(name: str) -> bool:
    """`name` can be a hub model id: org/name, or one of the hub's older ids without an org."""
    return bool(_HUB_ID.match(name) or _LEGACY_HUB.match(name))


@functools.cache
def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        return False
    return True


def reach_hub(name: str) -> None:
    """Before a hub id is loaded: offline mode on, with one note, when the hub's host takes no connection."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    url = urlsplit(constants.ENDPOINT)
    if url.hostname is None or _reachable(url.hostname, url.port or (80 if url.scheme == "http" else 443)):
        return
    constants.HF_HUB_OFFLINE = True
    print(f"note: {url.hostname} cannot be reached: {name} is read from the Hugging Face cache only (as with "
          "HF_HUB_OFFLINE=1)", file=sys.stderr)
