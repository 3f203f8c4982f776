"""Trust: PKI, TLS, enrolment, provisioning, node keys, authorization of peers."""
