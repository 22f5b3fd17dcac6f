"""The classroom mail server, one module per concern; `server.py` beside this package is its front door.

- `config`    ServerConfig: every setting, its default and its help text
- `users`     UserStore: users.txt (bcrypt hashes) and the login check
- `storage`   MailboxStore: each user's inbox and .Sent (Maildir++), durable delivery, the POP3 Maildrop
- `data`      the DATA reader (a state machine over any binary stream) and the dot-stuffing writer
- `limits`    ConnectionTable and LoginThrottle: server-wide caps, deadlines and the login throttle
- `listener`  MailServer (one per process), Listener (one per port), LineHandler (a session's plumbing)
- `smtp`      SMTPHandler: one smtp_<VERB> method per command, its docstring the HELP text
- `pop3`      POP3Handler: one pop3_<VERB> method per command, reading the inbox
- `sasl`      what AUTH's answers hold, for both protocols
- `logs`      what reaches the log: client text escaped, credentials masked
"""
