/** The fixed bodies the bench backend serves (shared with the checks of the e2e suite). */
export const BODY_1K = Buffer.alloc(1024, 'a');
export const BODY_64K = Buffer.alloc(64 * 1024, 'b');
export const JSON_OBJECT = {
  id: 42,
  name: 'Ada Lovelace',
  email: 'ada@example.com',
  active: true,
  roles: ['admin', 'author'],
  address: { street: '12 Analytical Row', city: 'London', zip: 'NW1' },
  score: 98.5,
  created_at: '2024-01-02T03:04:05Z',
};
export const BODY_JSON = Buffer.from(JSON.stringify(JSON_OBJECT));

