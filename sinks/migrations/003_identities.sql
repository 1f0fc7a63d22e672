-- Identity links (schemas/identity_link.v1.avsc): an anonymous id linked to a user id within a
-- product, published by the link agent to the `identities` topic. A refused re-link (the
-- anonymous id already belongs to another user) is stored too, with status 'conflict'.
-- Copies of one link (redelivery, replay) collapse: the whole record is the key.
CREATE TABLE IF NOT EXISTS identity_links
(
    product      LowCardinality(String),
    anonymous_id String,
    user_id      String,
    linked_at    DateTime64(3, 'UTC'),
    event_id     String,
    status       LowCardinality(String),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (product, anonymous_id, status, user_id)
;

-- One user per anonymous id: the first link wins (the agent never re-points a link, and this
-- keeps the answer deterministic even if its table state was lost and a later link slipped in).
CREATE VIEW IF NOT EXISTS identity_resolved AS
SELECT product, anonymous_id, argMin(user_id, linked_at) AS linked_user_id, min(linked_at) AS first_linked_at
FROM identity_links
WHERE status = 'linked'
GROUP BY product, anonymous_id
;

-- Events with the person resolved at query time: an anonymous event sent before its visitor
-- logged in resolves to that user once the link exists, so "events of user X" includes them.
CREATE VIEW IF NOT EXISTS events_resolved AS
SELECT
    e.*,
    if(l.linked_user_id != '', l.linked_user_id, e.person_id) AS resolved_person_id
FROM events AS e FINAL
LEFT JOIN identity_resolved AS l
    ON l.product = e.product AND l.anonymous_id = ifNull(e.anonymous_id, '')
;
