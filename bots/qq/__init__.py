"""QQ: a OneBot v11 client over a forward WebSocket (NapCat is the reference server).

cq.py reads CQ-code strings, translate.py is pure (OneBot events <-> Inbound, outgoing
segment arrays), onebot.py holds the connection (actions matched by echo, heartbeats,
reconnects), media.py fetches files into the blob store and converts voice (SILK) and
stickers (PNG), send.py delivers Replies, adapter.py ties them to the brain.
"""
