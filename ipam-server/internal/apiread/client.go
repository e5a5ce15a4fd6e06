package apiread

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// requestTimeout bounds a read (not a watch) when the caller's context allows longer.
const requestTimeout = 10 * time.Second

// accept asks for objects' metadata only, as client-go's metadata client does.
const accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"

// Client reads from one API server as one user.
type Client struct {
	server string
	token  string
	http   *http.Client
}

// Object is an object's metadata, as the API server sends a PartialObjectMetadata.
type Object struct {
	Metadata Meta `json:"metadata"`
}

// Meta is the part of ObjectMeta braid-ipam reads.
type Meta struct {
	Name            string            `json:"name"`
	Namespace       string            `json:"namespace,omitempty"`
	UID             string            `json:"uid"`
	ResourceVersion string            `json:"resourceVersion"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	// DeletionTimestamp is set once the object is being deleted (kept as the API server wrote it: only its
	// presence matters here).
	DeletionTimestamp string `json:"deletionTimestamp,omitempty"`
}

// Deleting reports whether the object is being deleted: a pod then is never served addresses any more.
func (m *Meta) Deleting() bool { return m.DeletionTimestamp != "" }

// StatusError is the API server's answer to a request it refused (a metav1.Status).
type StatusError struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("the API server answered %d %s", e.Code, e.Reason)
}

// IsNotFound reports whether err is the API server's 404.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// Get reads the metadata of the object at path (e.g. /api/v1/namespaces/ns/pods/p). resourceVersion "0" lets
// the API server answer from its watch cache; "" asks for the latest.
func (c *Client) Get(ctx context.Context, path, resourceVersion string) (*Object, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	q := url.Values{}
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	resp, err := c.do(ctx, path, q) //nolint:bodyclose // closeBody
	if err != nil {
		return nil, err
	}
	defer closeBody(resp.Body)
	var o Object
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
		return nil, fmt.Errorf("GET %s: undecodable answer: %w", path, err)
	}
	return &o, nil
}

// closeBody reads what is left of a body before closing it, so that the connection (and its TLS session) serves
// the next request, typically the watch that follows a read.
func closeBody(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}

// Watch follows the objects of the collection at path that match fieldSelector, from resourceVersion on,
// until ctx ends or the API server closes the watch.
func (c *Client) Watch(ctx context.Context, path, fieldSelector, resourceVersion string) (*Watch, error) {
	q := url.Values{"watch": {"true"}, "allowWatchBookmarks": {"false"}}
	if fieldSelector != "" {
		q.Set("fieldSelector", fieldSelector)
	}
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	resp, err := c.do(ctx, path, q) //nolint:bodyclose // Watch.Close
	if err != nil {
		return nil, err
	}
	return &Watch{body: resp.Body, dec: json.NewDecoder(resp.Body)}, nil
}

func (c *Client) do(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := c.server + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "braid-ipam")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer closeBody(resp.Body)
		se := &StatusError{}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(se); err != nil || se.Code == 0 {
			se = &StatusError{Code: resp.StatusCode, Reason: http.StatusText(resp.StatusCode)}
		}
		return nil, se
	}
	return resp, nil
}

// Watch is an open watch.
type Watch struct {
	body io.ReadCloser
	dec  *json.Decoder
}

// Event is one change the API server reports: ADDED, MODIFIED or DELETED, with the object's metadata.
type Event struct {
	Type   string
	Object Object
}

// Next returns the next event; io.EOF when the API server ended the watch, a *StatusError for its ERROR
// events (e.g. 410 Gone: the resource version is too old).
func (w *Watch) Next() (Event, error) {
	var raw struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	if err := w.dec.Decode(&raw); err != nil {
		return Event{}, err
	}
	if raw.Type == "ERROR" {
		se := &StatusError{}
		if err := json.Unmarshal(raw.Object, se); err != nil {
			return Event{}, fmt.Errorf("watch: undecodable error event: %w", err)
		}
		return Event{}, se
	}
	ev := Event{Type: raw.Type}
	if err := json.Unmarshal(raw.Object, &ev.Object); err != nil {
		return Event{}, fmt.Errorf("watch: undecodable %s event: %w", raw.Type, err)
	}
	return ev, nil
}

// Close ends the watch.
func (w *Watch) Close() error { return w.body.Close() }
