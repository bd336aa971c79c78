"""A throwaway Postfix (the Debian package) for tests: its own config, queue and log in a temp
dir, listening on loopback only; it relays ``relay_domain`` to a next hop and sends its
bounces (real RFC 3464 DSNs written by bounce(8)) to the hosts in ``routes``. Needs root
(Postfix drops to its ``postfix`` user) and /usr/sbin/postfix (scripts/bootstrap.sh test)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ops.postfix import MASTER_CF
from tests.harness import wait_for

POSTFIX = "/usr/sbin/postfix"



def available() -> str | None:
    """Why a Postfix instance cannot run here, or None."""
    if not os.path.exists(POSTFIX):
        return f"{POSTFIX} missing (scripts/bootstrap.sh test installs it)"
    if os.geteuid() != 0:
        return "Postfix needs root to start (it drops to its postfix user)"
    return None


def tmp_root(tmp: Path) -> str:
    """The system temp dir (world-traversable), not the test's own."""
    return tempfile.gettempdir()


class Postfix:
    def __init__(self, tmp: Path, port: int, relay_domain: str, next_hop: int,
                 routes: dict[str, int], hostname: str = "mx.rcpt.test",
                 recipient_access: dict[str, str] | None = None) -> None:
        """``recipient_access``: address -> Postfix access(5) action (e.g. ``REJECT no such
        user``, ``421 4.7.0 go away``), checked before the relay rules."""
        # a directory of its own that the postfix user can enter (pytest's are 0700 root)
        self.dir = Path(tempfile.mkdtemp(prefix="kmta-postfix-", dir=tmp_root(tmp)))
        self.dir.chmod(0o755)
        self.conf = self.dir / "conf"
        self.log = self.dir / "maillog"
        queue, data = self.dir / "queue", self.dir / "data"
        for d in (self.conf, queue, data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix")
        transport = [f"{relay_domain} smtp:[127.0.0.1]:{next_hop}"]
        transport += [f"{dom} smtp:[127.0.0.1]:{p}" for dom, p in routes.items()]
        (self.conf / "transport").write_text("\n".join(transport) + "\n")
        access = "".join(f"{k} {v}\n" for k, v in (recipient_access or {}).items())
        (self.conf / "rcpt_access").write_text(access)
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file_prefixes = {self.dir}
maillog_file = {self.log}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {relay_domain}
transport_maps = texthash:{self.conf}/transport
smtpd_recipient_restrictions = check_recipient_access texthash:{self.conf}/rcpt_access,
  permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
smtp_host_lookup = native
disable_dns_lookups = yes
smtputf8_enable = no
biff = no
delay_warning_time = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
        self.port = port

    def _cmd(self, *args: str) -> None:
        subprocess.run([POSTFIX, "-c", str(self.conf), *args], check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        self._cmd("start")
        wait_for(lambda: self.log.exists() and "daemon started" in self.log.read_text(), 30,
                 "Postfix to start")

    def stop(self) -> None:
        try:
            self._cmd("stop")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def logtext(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
