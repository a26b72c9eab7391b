module github.com/hanwen/go-fuse/v2

// v2.12.1 with geofs's change (GEOFS.md); the requirements of the packages kept here.
require golang.org/x/sys v0.28.0

go 1.21
