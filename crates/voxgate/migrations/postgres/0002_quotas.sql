-- Durable quota accounting: what each subject has used and reserved in each window.
CREATE TABLE quota_usage (
    subject TEXT NOT NULL,
    metric TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, metric, window_start)
);
