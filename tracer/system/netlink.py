"""pyroute2, the netlink library, as droptrace uses it: every pyroute2 name comes from here.

Importing any pyroute2 module runs the package's __init__, which imports every protocol
the library has (NDB with sqlite3, IPDB, IPVS, plan9, wireless, ...): 5-6 MB of memory in
every session for classes droptrace never uses (upstream: svinota/pyroute2#1404, where
users keep an __init__ of their own). So the package is registered without running its
__init__ and only the modules named below are loaded; a top-level name asked for elsewhere
in the process (`from pyroute2 import NDB`) still runs the real __init__ then.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING


def _package_without_init() -> None:
    if "pyroute2" in sys.modules:
        return  # already imported whole: use it as it is
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # not installed: the imports below say so
    package = importlib.util.module_from_spec(spec)  # __path__ and all, not yet run
    loader = spec.loader

    def whole(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        try:  # `from pyroute2 import config` inside pyroute2: a submodule
            return importlib.import_module(f"pyroute2.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"pyroute2.{name}":
                raise
        del package.__getattr__  # a name the real __init__ defines: run it now
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = whole  # type: ignore[method-assign]
    sys.modules["pyroute2"] = package


_package_without_init()

# The package must be registered before these imports.
# ruff: noqa: E402
from pyroute2.conntrack import ConntrackEntry
from pyroute2.iproute import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, nla
from pyroute2.netlink.diag import DiagSocket
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTNETLINK, NFNL_SUBSYS_NFTABLES, nfgen_msg
from pyroute2.netlink.nfnetlink.nfctsocket import IPCTNL_MSG_CT_GET, NFCTAttrTuple, nfct_msg

if TYPE_CHECKING:
    from pyroute2.ethtool import Ethtool

__all__ = [
    "IPCTNL_MSG_CT_GET",
    "NFNL_SUBSYS_CTNETLINK",
    "NFNL_SUBSYS_NFTABLES",
    "NLMSG_ERROR",
    "NLM_F_ACK",
    "NLM_F_REQUEST",
    "ConntrackEntry",
    "DiagSocket",
    "IPRoute",
    "NFCTAttrTuple",
    "NetlinkError",
    "ethtool",
    "nfct_msg",
    "nfgen_msg",
    "nla",
]


def ethtool() -> Ethtool:
    """An ethtool netlink client (its module is loaded on first use: few drops need it)."""
    from pyroute2.ethtool import Ethtool

    return Ethtool()
