"""The telnet admin shell (CONTRACT §4): login through on_shell_login or shell.users, then commands."""
