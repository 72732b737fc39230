"""The error of a request the network policy (:mod:`.guard`) refused before sending it.

A module of its own because it is an ``httpx.RequestError``: the policy itself is made for
every untrusted run, and importing httpx for it would cost every run about 70 ms.
"""

from __future__ import annotations

import httpx

from .guard import ALLOW_ENV, _same


class AddressRefused(httpx.RequestError):
    """The network policy refused a request before anything was sent: ``host`` (the URL's)
    resolves to ``address``, which is ``reason`` (e.g. ``"a loopback address"``). ``always``:
    no policy reaches it (link-local, cloud metadata); else trusting the workflow or the
    allow list would."""

    def __init__(self, host: str, port: int, address: str, reason: str, *, always: bool):
        self.host, self.port, self.address = host, port, address
        self.reason, self.always = reason, always
        where = address if _same(host, address) else f"{host} resolves to {address}"
        who = "no workflow may reach" if always else "an untrusted workflow may not reach"
        super().__init__(f"{where}, {reason}, which {who}")

    @property
    def fix(self) -> str:
        """How to get past the refusal, in words a user can follow."""
        if self.always:
            return ("link-local and cloud-metadata addresses are never reachable from a "
                    "workflow (they hand out the machine's credentials); use another address")
        entry = f"[{self.host}]" if ":" in self.host else self.host
        return (f"if you trust this workflow, trust its file (cellwire trust FILE, or run it "
                f"with --trust / trusted=True); or allow just this server: "
                f"{ALLOW_ENV}={entry}:{self.port} (comma-separated hosts, host:port pairs "
                f"or CIDRs, e.g. 10.0.0.0/8)")
