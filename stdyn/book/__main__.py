from stdyn.book.runner import main

raise SystemExit(main())
