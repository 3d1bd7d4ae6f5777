"""The SQL scalers: `postgresql` (psycopg 3) and `mysql` (aiomysql), on one shared hub.

`hub` holds what both share: a few connections per server and credential, queries coalesced
across objects, the timeout, and the reading of a result as one number.
"""
