//! Runner containers through the Docker Engine API (work in progress).
