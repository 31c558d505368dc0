"""Floor 2: the barest Channels relay: daphne + channels-redis, a consumer that only forwards.

No database, no authentication, no JSON handling: each text frame is group-sent to its pair's
group through the Redis layer (as our chat sends to a session group), and the other side's
consumer writes it to its socket. The difference to floor 1 is what the framework alone costs.
"""
