"""Hex over HTP: the engine that HexGui and referees talk to, and the referee that talks to engines."""
