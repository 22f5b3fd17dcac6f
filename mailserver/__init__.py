"""The classroom mail server, one module per concern; `server.py` beside this package is its front door.

- `config`    ServerConfig: every setting, its default and its help text
- `users`     UserStore: users.txt (bcrypt hashes) and the login check
- `storage`   MailboxStore and Maildrop: the one interface a session uses for mail (inbox, .Sent)
- `maildir`   the Maildir format: names, sizes, LF/CRLF, a folder's index, one Delivery on its way
- `durable`   durable writes: fsync, the group-committed directory fsync, hard link or copy
- `migration` the move of the old layout into .Sent at start-up (to be removed, see its date)
- `data`      the DATA reader (a state machine over any binary stream) and the dot-stuffing writer
- `limits`    ConnectionTable and LoginThrottle: server-wide caps, deadlines and the login throttle
- `listener`  MailServer (one per process) and Listener (one per port)
- `session`   LineHandler: the command loop, deadlines, login and TLS that SMTP and POP3 share
- `smtp`      SMTPHandler: one smtp_<VERB> method per command, its docstring the HELP text
- `pop3`      POP3Handler: one pop3_<VERB> method per command, reading the inbox
- `sasl`      what AUTH's answers hold, for both protocols
- `logs`      what reaches the log: client text escaped, credentials masked
"""
