"""One router per area: auth, record (public recording page), labeling, review, admin."""
