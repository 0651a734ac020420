from tahoe_auth.cli import main

raise SystemExit(main())
