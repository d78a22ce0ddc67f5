-- A request's reservation and its settlement are each one statement (SQLite makes one
-- statement atomic, triggers included), so the hot path costs two trips to the database
-- instead of a dozen.
--
-- Reserving: the request inserts one `quota_holds` row per quota with `quota_limit` set;
-- the trigger adds its amount to the window's `reserved` and aborts the whole statement
-- (every row of it, every counter it moved) when the window would then hold more than the
-- limit. Rows inserted without `quota_limit` (the per-quota path) do not fire it.
--
-- Settling: the request sets `settled` on its rows to what it used; the trigger moves each
-- row's amount out of `reserved`, charges at most that amount, and deletes the row, so a
-- hold is settled exactly once (a second settlement finds no rows).
ALTER TABLE quota_holds ADD COLUMN quota_limit INTEGER;
ALTER TABLE quota_holds ADD COLUMN settled INTEGER;

CREATE TRIGGER quota_hold_reserve AFTER INSERT ON quota_holds
WHEN NEW.quota_limit IS NOT NULL
BEGIN
    INSERT INTO quota_usage (subject, metric, window_start, used, reserved)
    VALUES (NEW.subject, NEW.metric, NEW.window_start, 0, NEW.amount)
    ON CONFLICT (subject, metric, window_start) DO UPDATE SET reserved = reserved + excluded.reserved;
    SELECT RAISE(ABORT, 'quota_exceeded') FROM quota_usage
    WHERE subject = NEW.subject AND metric = NEW.metric AND window_start = NEW.window_start
      AND used + reserved > NEW.quota_limit;
END;

CREATE TRIGGER quota_hold_settle AFTER UPDATE OF settled ON quota_holds
WHEN NEW.settled IS NOT NULL
BEGIN
    UPDATE quota_usage
    SET reserved = reserved - OLD.amount, used = used + MIN(MAX(NEW.settled, 0), OLD.amount)
    WHERE subject = OLD.subject AND metric = OLD.metric AND window_start = OLD.window_start;
    DELETE FROM quota_holds
    WHERE id = OLD.id AND subject = OLD.subject AND metric = OLD.metric AND window_start = OLD.window_start;
END;
