//! Harness for tests that run real `haproxy` processes and stktagg daemons on loopback.
