#!/usr/bin/env python3
"""Sets up a moto_server started with INITIAL_NO_AUTH_ACTION_COUNT=3 for cfn-archive's cold
storage tests: with its first three (unauthenticated) requests, an IAM user with an access
key and an allow-all policy; after that every request must be signed with that key.

usage: moto_setup.py PORT                  prints "ACCESS_KEY SECRET"
       moto_setup.py PORT AK SK BUCKET     creates BUCKET, signed with the key
       moto_setup.py PORT AK SK BUCKET KEY prints the MD5 and size of an object
       moto_setup.py PORT AK SK BUCKET KEY put   writes "not ours" there
       moto_setup.py PORT AK SK BUCKET KEY putfile PATH   writes PATH's bytes there
"""
import hashlib
import json
import sys

import boto3

port = sys.argv[1]
url = f"http://127.0.0.1:{port}"
if len(sys.argv) == 2:
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="cfn-archive")
    key = iam.create_access_key(UserName="cfn-archive")["AccessKey"]
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="cfn-archive", PolicyName="all",
                        PolicyDocument=json.dumps(policy))
    print(key["AccessKeyId"], key["SecretAccessKey"])
    sys.exit(0)
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
if len(sys.argv) == 5:
    s3.create_bucket(Bucket=sys.argv[4])
elif len(sys.argv) == 8 and sys.argv[6] == "putfile":
    with open(sys.argv[7], "rb") as f:
        s3.put_object(Bucket=sys.argv[4], Key=sys.argv[5], Body=f.read())
elif len(sys.argv) == 7:
    s3.put_object(Bucket=sys.argv[4], Key=sys.argv[5], Body=b"not ours")
else:
    body = s3.get_object(Bucket=sys.argv[4], Key=sys.argv[5])["Body"].read()
    print(hashlib.md5(body).hexdigest(), len(body))
