-- Who holds each quota reservation, so that none outlives its holder. One row per
-- (request, quota window) a request reserved in: `amount` is what `quota_usage.reserved`
-- holds for it, `delivered` what its holder last reported as delivered, `instance` the
-- process that holds it. The holder renews `deadline` (the database's clock) while the
-- request lives; a row whose deadline has passed belongs to a dead or stuck holder and is
-- settled at `delivered` by any instance. A row is deleted in the same transaction that
-- moves its amount out of `reserved`, so a reservation is settled exactly once.
CREATE TABLE quota_holds (
    id TEXT NOT NULL,
    subject TEXT NOT NULL,
    metric TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    instance TEXT NOT NULL,
    deadline BIGINT NOT NULL,
    PRIMARY KEY (id, subject, metric, window_start)
);
CREATE INDEX quota_holds_deadline ON quota_holds (deadline);
