"""What crosses Redis: key names, codecs, the sample and weights formats, connections, presence, consumer groups, rq and the ACL."""
