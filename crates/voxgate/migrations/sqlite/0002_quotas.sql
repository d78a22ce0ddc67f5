-- Durable quota accounting: what each subject has used and reserved in each window.
CREATE TABLE quota_usage (
    subject TEXT NOT NULL,
    metric TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, metric, window_start)
);
