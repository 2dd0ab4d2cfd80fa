package server

import "strings"

// ifNoneMatch reports whether the If-None-Match field lines (RFC 9110 section 13.1.2) match etag,
// which makes a GET or HEAD answer 304. The field may be repeated and each line is a list, so
// every entity tag is looked at. If-None-Match uses the weak comparison: W/"x" matches "x".
// A malformed list stops the scan without a match, which only costs the client a full 200.
// It works on substrings and never allocates.
func ifNoneMatch(lines []string, etag string) bool {
	for _, line := range lines {
		if etagListMatches(line, etag) {
			return true
		}
	}
	return false
}

func etagListMatches(list, etag string) bool {
	for {
		list = strings.TrimLeft(list, " \t,")
		if list == "" {
			return false
		}
		if list[0] == '*' {
			return true
		}
		tag, rest, ok := scanETag(list)
		if !ok {
			return false
		}
		if tag == etag {
			return true
		}
		list = rest
	}
}

// scanETag splits the entity tag at the start of s from what follows, dropping a weak "W/"
// indicator. Entity tags may contain commas, so the closing quote, not a comma, ends one.
func scanETag(s string) (tag, rest string, ok bool) {
	s = strings.TrimPrefix(s, "W/")
	if len(s) < 2 || s[0] != '"' {
		return "", "", false
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", "", false
	}
	return s[:end+2], s[end+2:], true
}
