package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/geofs/geofs/store"
)

// Client asks a running site through its admin socket.
type Client struct {
	hc   *http.Client
	path string
}

var _ Site = (*Client)(nil)

// Dial returns a client for the socket at path.
func Dial(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{hc: &http.Client{Transport: tr}, path: path}
}

func (c *Client) do(ctx context.Context, method, op string, q url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://geofs/"+op+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the running site at %s: %w", c.path, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(body))
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", msg, store.ErrNotFound)
	case http.StatusUnprocessableEntity:
		return nil, fmt.Errorf("%s: %w", msg, store.ErrCorrupt)
	}
	return nil, errors.New(msg)
}

func (c *Client) getJSON(ctx context.Context, method, op string, q url.Values, v any) error {
	resp, err := c.do(ctx, method, op, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// Versions lists a file's versions.
func (c *Client) Versions(ctx context.Context, path string) ([]VersionInfo, error) {
	var out []VersionInfo
	err := c.getJSON(ctx, "GET", "versions", url.Values{"path": {path}}, &out)
	return out, err
}

// Cat writes a version's content to w.
func (c *Client) Cat(ctx context.Context, path, version string, w io.Writer) error {
	resp, err := c.do(ctx, "GET", "cat", url.Values{"path": {path}, "version": {version}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("cat %s: transfer failed: %w", path, err)
	}
	return nil
}

// Restore makes an old version current again.
func (c *Client) Restore(ctx context.Context, path, version string) (VersionInfo, error) {
	var out VersionInfo
	err := c.getJSON(ctx, "POST", "restore", url.Values{"path": {path}, "version": {version}}, &out)
	return out, err
}

// Log streams txlog entries.
func (c *Client) Log(ctx context.Context, from uint64, fn func(LogEntry) error) error {
	resp, err := c.do(ctx, "GET", "log", url.Values{"from": {strconv.FormatUint(from, 10)}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var e struct {
			LogEntry
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("log: %w", err)
		}
		if e.Error != "" {
			return errors.New(e.Error)
		}
		if err := fn(e.LogEntry); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Fsck checks the store of the running site.
func (c *Client) Fsck(ctx context.Context, repair bool) (FsckReport, error) {
	var out FsckReport
	err := c.getJSON(ctx, "GET", "fsck", url.Values{"repair": {strconv.FormatBool(repair)}}, &out)
	return out, err
}

// Pin pins a subtree at the running site.
func (c *Client) Pin(ctx context.Context, path string) (store.PinResult, error) {
	var out store.PinResult
	err := c.getJSON(ctx, "POST", "pin", url.Values{"path": {path}}, &out)
	return out, err
}

// Unpin releases a pin at the running site.
func (c *Client) Unpin(ctx context.Context, path string) error {
	var out struct{}
	return c.getJSON(ctx, "POST", "unpin", url.Values{"path": {path}}, &out)
}

// Status reports the running site's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	err := c.getJSON(ctx, "GET", "status", nil, &out)
	return out, err
}
