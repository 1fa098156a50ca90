#!/opt/moto/bin/python3
"""The two MinIO client commands compose.yaml uses, against the S3 stand-in:
`mc ready ALIAS` and `mc mb [--ignore-existing] ALIAS/BUCKET`, ALIAS from MC_HOST_<ALIAS>
(http://KEY:SECRET@HOST:PORT) as mc reads it."""
import os
import sys
from urllib.parse import urlsplit

import boto3
import botocore.exceptions


def client(alias):
    url = os.environ.get(f"MC_HOST_{alias}")
    if not url:
        sys.exit(f"mc: MC_HOST_{alias} is not set")
    parts = urlsplit(url)
    return boto3.client(
        "s3",
        endpoint_url=f"{parts.scheme}://{parts.hostname}:{parts.port}",
        aws_access_key_id=parts.username,
        aws_secret_access_key=parts.password,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )


def main(args):
    if len(args) == 2 and args[0] == "ready":
        try:
            client(args[1]).list_buckets()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            sys.exit(f"mc: {args[1]} is not ready ({error})")
        return
    if args and args[0] == "mb":
        ignore = "--ignore-existing" in args
        targets = [a for a in args[1:] if not a.startswith("-")]
        if len(targets) != 1 or "/" not in targets[0]:
            sys.exit("usage: mc mb [--ignore-existing] ALIAS/BUCKET")
        alias, bucket = targets[0].split("/", 1)
        s3 = client(alias)
        region = s3.meta.region_name
        config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            s3.create_bucket(Bucket=bucket, **config)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            if not ignore:
                sys.exit(f"mc: bucket {bucket} exists")
        print(f"Bucket created successfully `{targets[0]}`.")
        return
    sys.exit("mc (acufarm's S3 stand-in) knows only: ready ALIAS, mb [--ignore-existing] ALIAS/BUCKET")


if __name__ == "__main__":
    main(sys.argv[1:])
