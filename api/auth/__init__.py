"""One authentication layer for both faces: ACS3 and v2 signatures, Bearer keys."""
