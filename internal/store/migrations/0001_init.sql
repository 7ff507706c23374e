CREATE TABLE vms (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    state      TEXT NOT NULL,
    guest_ip   TEXT NOT NULL UNIQUE,
    image      TEXT NOT NULL DEFAULT '',
    image_id   TEXT NOT NULL DEFAULT '',
    kernel     TEXT NOT NULL DEFAULT '',
    spec       TEXT NOT NULL,
    runtime    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX vms_image_id ON vms(image_id);
CREATE INDEX vms_kernel ON vms(kernel);

CREATE TABLE images (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE kernels (
    name      TEXT PRIMARY KEY,
    data      TEXT NOT NULL,
    pulled_at TEXT NOT NULL
);
