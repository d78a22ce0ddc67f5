-- Browser keys: the web origins (space-separated) a key works from; NULL means any caller.
ALTER TABLE api_keys ADD COLUMN origins TEXT;
