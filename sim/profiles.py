"""Reply texts of the simulated providers, per profile.

Texts follow the research notes (/work/shared/research/providers.md: KumoMTA shaping files, the
smtp-field-manual, providers' postmaster pages) so that kmta's reply classifier is exercised with
replies shaped like the real ones, multi-line continuations included. Placeholders: ``{ip}`` (the
client's address), ``{rcpt}``, ``{domain}`` (recipient domain), ``{mx}`` (the sim's host name).
"""

from __future__ import annotations

__all__ = ["PROFILES", "REPLY_KINDS", "profile_replies"]

REPLY_KINDS = (
    "throttle_reply",
    "block_reply",
    "too_many_connections_reply",
    "max_messages_reply",
    "unknown_user_reply",
    "full_mailbox_reply",
    "greylist_reply",
    "tempfail_reply",
    "reject_reply",
)

_GENERIC = {
    "throttle_reply": "421 4.7.0 [{ip}] rate limited, too many messages; try again later",
    "block_reply": "554 5.7.1 Service unavailable; Client host [{ip}] blocked for sending too fast",
    "too_many_connections_reply": "421 4.7.0 Too many connections from {ip}",
    "max_messages_reply": (
        "421 4.7.0 Max message per connection reached, closing transmission channel"
    ),
    "unknown_user_reply": "550 5.1.1 <{rcpt}>: Recipient address rejected: user unknown",
    "full_mailbox_reply": "452 4.2.2 <{rcpt}>: mailbox full",
    "greylist_reply": "451 4.7.1 <{rcpt}>: greylisted, try again later",
    "tempfail_reply": "451 4.3.0 <{rcpt}>: temporary failure, try again later",
    "reject_reply": "554 5.7.1 Message rejected for policy reasons",
}

PROFILES: dict[str, dict[str, str]] = {
    "generic": _GENERIC,
    # Google: 421-4.7.28 (SFM; KC: rate limit), 421 4.7.0 low reputation (SFM; KC: suspend 1 h).
    "gmail": {
        "throttle_reply": (
            "421-4.7.28 [{ip}] Our system has detected an unusual rate of\n"
            "421-4.7.28 unsolicited mail originating from your IP address. To protect our\n"
            "421-4.7.28 users from spam, mail sent from your IP address has been temporarily\n"
            "421 4.7.28 rate limited. https://support.google.com/mail/?p=UnsolicitedRateLimitError"
            " - gsmtp"
        ),
        "block_reply": (
            "421-4.7.0 [{ip}] Our system has detected that this message is\n"
            "421-4.7.0 suspicious due to the very low reputation of the sending domain. To best\n"
            "421 4.7.0 protect our users from spam, the message has been blocked. - gsmtp"
        ),
        "too_many_connections_reply": (
            "421 4.7.0 Too many connections from [{ip}], try again later. - gsmtp"
        ),
        "max_messages_reply": (
            "421 4.7.0 Max message per connection reached, closing transmission channel - gsmtp"
        ),
        "unknown_user_reply": (
            "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
            "550-5.1.1 double-checking the recipient's email address for typos or\n"
            "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser - gsmtp"
        ),
        "full_mailbox_reply": (
            "452-4.2.2 The recipient's inbox is out of storage space. Please direct the\n"
            "452 4.2.2 recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp"
        ),
        "greylist_reply": ("451 4.7.1 <{rcpt}>: greylisted, try again later - gsmtp"),
        "tempfail_reply": "451 4.3.0 Temporary System Problem. Try again later. - gsmtp",
        "reject_reply": (
            "550-5.7.1 [{ip}] Our system has detected that this message is\n"
            "550 5.7.1 likely unsolicited mail. - gsmtp"
        ),
    },
    # Yahoo: [TSS04] (KD: suspend 2 h), [TS03] permanently deferred (do not resend), 20/connection.
    "yahoo": {
        "throttle_reply": (
            "421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume"
            " or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
        ),
        "block_reply": (
            "421 4.7.1 [TS03] All messages from {ip} will be permanently deferred; Retrying will"
            " NOT succeed. See https://postmaster.yahooinc.com/error-codes"
        ),
        "too_many_connections_reply": (
            "421 4.7.0 [TSS09] Too many concurrent connections from {ip}; see"
            " https://postmaster.yahooinc.com/error-codes"
        ),
        "max_messages_reply": (
            "421 Max message per connection reached, closing transmission channel"
        ),
        "unknown_user_reply": (
            "550 5.1.1 <{rcpt}>: user unknown - This user doesn't have a {domain} account"
        ),
        "full_mailbox_reply": "452 4.2.2 <{rcpt}>: mailbox full, try again later",
        "greylist_reply": "451 4.7.1 <{rcpt}>: greylisted, try again later",
        "tempfail_reply": "451 4.3.0 Temporary failure, please try again later",
        "reject_reply": "554 Message not allowed - [PH01] Email not accepted for policy reasons",
    },
    # Microsoft consumer (olc.protection.outlook.com): S775 rate limit, S3150 block list.
    "outlook": {
        "throttle_reply": (
            "451 4.7.650 The mail server [{ip}] has been temporarily rate limited due to IP"
            " reputation. For e-mail delivery information, see https://postmaster.live.com"
            " (S775) [{mx}]"
        ),
        "block_reply": (
            "550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. Please contact your"
            " Internet service provider since part of their network is on our block list"
            " (S3150). You can also refer your provider to"
            " http://mail.live.com/mail/troubleshooting.aspx#errors. [{mx}]"
        ),
        "too_many_connections_reply": (
            "421 4.3.2 The maximum number of concurrent server connections has exceeded a limit,"
            " closing transmission channel [{mx}]"
        ),
        "max_messages_reply": (
            "421 4.3.2 The maximum number of messages per connection has been exceeded,"
            " closing transmission channel [{mx}]"
        ),
        "unknown_user_reply": (
            "550 5.5.0 Requested action not taken: mailbox unavailable (S2017) [{mx}]"
        ),
        "full_mailbox_reply": "452 4.2.2 The recipient's mailbox is full [{mx}]",
        "greylist_reply": "451 4.7.1 <{rcpt}>: greylisted, try again later [{mx}]",
        "tempfail_reply": "451 4.7.0 Temporary server error. Please try again later. PRX6 [{mx}]",
        "reject_reply": "550 5.7.511 Access denied, banned sender [{mx}]",
    },
    # Mail.ru: no published rate text; block reply from SFM.
    "mailru": {
        "throttle_reply": "421 4.7.0 Too many messages from {ip}, try again later",
        "block_reply": (
            "550 spam message rejected. Please visit"
            " http://help.mail.ru/notspam-support/id?c=sim or report details to"
            " abuse@corp.mail.ru. Error code: SIM. ID: {ip}."
        ),
        "too_many_connections_reply": "421 4.7.0 Too many concurrent connections from {ip}",
        "max_messages_reply": (
            "421 4.7.0 Max message per connection reached, closing transmission channel"
        ),
        "unknown_user_reply": (
            "550 Message was not accepted -- invalid mailbox. Local mailbox {rcpt} is"
            " unavailable: user not found"
        ),
        "full_mailbox_reply": "452 4.2.2 Mailbox {rcpt} is full",
        "greylist_reply": "451 4.7.1 <{rcpt}>: greylisted, try again later",
        "tempfail_reply": "451 4.3.0 Temporary failure, try again later",
        "reject_reply": (
            "550 spam message rejected. Please visit http://help.mail.ru/notspam-support/id"
        ),
    },
    # Yandex: "451 4.7.1 Sorry, the service is currently unavailable", spam 554 5.7.1 (SFM).
    "yandex": {
        "throttle_reply": (
            "451 4.7.1 Sorry, the service is currently unavailable. Please come back later."
        ),
        "block_reply": "554 5.7.1 Client host [{ip}] blocked; https://ya.cc/1IrBc",
        "too_many_connections_reply": "421 4.7.0 Too many connections from [{ip}]",
        "max_messages_reply": (
            "421 4.7.0 Max message per connection reached, closing transmission channel"
        ),
        "unknown_user_reply": "550 5.7.1 No such user!",
        "full_mailbox_reply": "452 4.2.2 Mailbox size limit exceeded",
        "greylist_reply": "451 4.7.1 <{rcpt}>: greylisted, try again later",
        "tempfail_reply": "451 4.3.0 Temporary failure, try again later",
        "reject_reply": (
            "554 5.7.1 [1] Message rejected under suspicion of SPAM; https://ya.cc/1IrBc"
        ),
    },
    # Orange: OFR004_104 too many connections, OFR004_105 refused, OFR006_102 blocked (KD/KC).
    "orange": {
        "throttle_reply": (
            "421 mwinf0sim Service refuse. Veuillez essayer plus tard. OFR004_105 [105]"
        ),
        "block_reply": (
            "550 5.7.1 mwinf0sim Service refuse. Client host [{ip}] blocked for spamming issues."
            " OFR006_102 Ref http://csi.cloudmark.com [102]"
        ),
        "too_many_connections_reply": (
            "421 mwinf0sim Trop de connexions, veuillez verifier votre configuration."
            " Too many connections, slow down. OFR004_104 [104]"
        ),
        "max_messages_reply": (
            "421 4.7.0 mwinf0sim Max message per connection reached, closing transmission channel"
        ),
        "unknown_user_reply": (
            "550 5.1.1 Adresse d au moins un destinataire invalide. Invalid recipient."
            " OFR_416 [416]"
        ),
        "full_mailbox_reply": (
            "452 4.2.2 Boite du destinataire pleine. Recipient overquota. OFR_417"
        ),
        "greylist_reply": "451 4.7.1 <{rcpt}>: greylisted, try again later",
        "tempfail_reply": "451 4.3.0 Service refuse. Veuillez essayer plus tard. OFR_999 [999]",
        "reject_reply": "554 5.7.1 Message refuse. OFR_506 [506]",
    },
}


def profile_replies(profile: str) -> dict[str, str]:
    """The reply texts of ``profile``; kinds it does not define fall back to the generic ones."""
    try:
        specific = PROFILES[profile]
    except KeyError:
        raise KeyError(f"unknown provider profile {profile!r}; known: {sorted(PROFILES)}") from None
    return {**_GENERIC, **specific}
